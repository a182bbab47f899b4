"""How a worker reads an artifact by reference: to a local file, verified before use."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from core.objects._store import ObjectStore

__all__ = ["IntegrityError", "fetch", "sha256_of"]


class IntegrityError(Exception):
    """The stored bytes are not the artifact's: wrong size or sha256 (never retry: they will
    not get better)."""


def sha256_of(store: ObjectStore, key: str) -> tuple[int, str]:
    """Size and sha256 (hex) of the object, read in a stream (never whole in memory)."""
    digest = hashlib.sha256()
    size = 0
    with contextlib.closing(store.read(key)) as pieces:
        for piece in pieces:
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()


def fetch(
    store: ObjectStore, key: str, *, size_bytes: int, sha256: str, directory: Path | None = None
) -> Path:
    """Stream object ``key`` into a new temporary file in ``directory`` and return its path.

    The file's size and sha256 are checked against the reference while it is written:
    IntegrityError (and no file left behind) when they differ. The caller deletes the
    file when done with it.
    """
    digest = hashlib.sha256()
    size = 0
    fd, name = tempfile.mkstemp(prefix="artifact-", dir=directory)
    path = Path(name)
    try:
        # Closed even when we stop early: an S3 body holds a pooled connection until then.
        with os.fdopen(fd, "wb") as out, contextlib.closing(store.read(key)) as pieces:
            for piece in pieces:
                digest.update(piece)
                size += len(piece)
                if size > size_bytes:
                    break
                out.write(piece)
        if size != size_bytes or digest.hexdigest() != sha256:
            found = f"{size}+" if size > size_bytes else str(size)
            raise IntegrityError(
                f"object {key} holds {found} bytes with sha256 {digest.hexdigest()[:12]}..., "
                f"the artifact has {size_bytes} bytes with sha256 {sha256[:12]}...: "
                "the stored copy is damaged; upload the artifact again"
            )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
