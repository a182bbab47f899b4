"""Damage a stored artifact's bytes in place on the file store, as a bad disk would."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select

from core.db import ArtifactRow
from tests.workers._stack import Stack

__all__ = ["damage_object", "object_file"]


def object_file(stack: Stack, key: str) -> Path:
    """The file of object ``key`` in the stack's file store."""
    return Path(urlsplit(stack.env["AGENTIC_OBJECT_STORE_URL"]).path) / key


def damage_object(stack: Stack, artifact_id: str, offset: int, byte: bytes | None = None) -> str:
    """Overwrite the byte at ``offset`` of the artifact's object file with ``byte`` (None:
    its bits flipped); same size, so only the sha256 can tell. The object's key."""
    with stack.db().connect() as conn:
        key: str = conn.execute(
            select(ArtifactRow.object_key).where(ArtifactRow.id == artifact_id)
        ).scalar_one()
    with object_file(stack, key).open("r+b") as handle:
        handle.seek(offset)
        before = handle.read(1)
        new = bytes([before[0] ^ 0xFF]) if byte is None else byte
        assert before != new, "the damage must change the byte"
        handle.seek(offset)
        handle.write(new)
    return key
