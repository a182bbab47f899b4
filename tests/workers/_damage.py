"""Damage a stored artifact's bytes in place on the file store, as a bad disk would."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select

from core.db import ArtifactRow
from tests.workers._stack import Stack

__all__ = ["damage_object"]


def damage_object(stack: Stack, artifact_id: str, offset: int, byte: bytes) -> None:
    """Overwrite the byte at ``offset`` of the artifact's object file with ``byte`` (same
    size: only the sha256 can tell)."""
    with stack.db().connect() as conn:
        key = conn.execute(
            select(ArtifactRow.object_key).where(ArtifactRow.id == artifact_id)
        ).scalar_one()
    path = Path(urlsplit(stack.env["AGENTIC_OBJECT_STORE_URL"]).path) / key
    with path.open("r+b") as handle:
        handle.seek(offset)
        assert handle.read(1) != byte, "the damage must change the byte"
        handle.seek(offset)
        handle.write(byte)
