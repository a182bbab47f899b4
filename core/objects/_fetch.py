"""How a worker reads an artifact by reference: to a local file, verified before use."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from core.objects._store import MAX_READ_CHUNK_BYTES, ObjectStore

__all__ = ["IntegrityError", "check_file", "fetch", "sha256_of"]


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
    store: ObjectStore,
    key: str,
    *,
    size_bytes: int,
    sha256: str,
    directory: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """A verified local file of object ``key``; the caller deletes it when done with it.

    Where the store keeps objects as local files (``ObjectStore.pin``), the file is a hard
    link of the object: no bytes are copied, they are only read once to be checked.
    Otherwise the object streams into a new temporary file in ``directory``, checked while
    it is written. Either way the size and sha256 are checked against the reference before
    the path is returned: IntegrityError (and no file left behind) when they differ.
    ``progress`` is called with the bytes checked so far after every piece; whatever it
    raises (a cancellation) stops the fetch, leaving no file behind.
    """
    pinned = store.pin(key)
    if pinned is not None:
        try:
            check_file(key, pinned, size_bytes, sha256, progress)
        except BaseException:
            pinned.unlink(missing_ok=True)
            raise
        return pinned
    fd, name = tempfile.mkstemp(prefix="artifact-", dir=directory)
    path = Path(name)
    try:
        # Closed even when we stop early: an S3 body holds a pooled connection until then.
        with os.fdopen(fd, "wb") as out, contextlib.closing(store.read(key)) as pieces:
            _check(key, pieces, size_bytes, sha256, progress, out)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def check_file(
    key: str,
    path: Path,
    size_bytes: int,
    sha256: str,
    progress: Callable[[int], None] | None,
) -> None:
    """Read the local file at ``path`` in pieces; IntegrityError unless it is ``size_bytes``
    bytes with ``sha256``. ``progress`` as for ``fetch`` (whatever it raises stops the read)."""
    with path.open("rb") as handle:
        _check(
            key,
            iter(lambda: handle.read(MAX_READ_CHUNK_BYTES), b""),
            size_bytes,
            sha256,
            progress,
            None,
        )


def _check(
    key: str,
    pieces: Iterator[bytes],
    size_bytes: int,
    sha256: str,
    progress: Callable[[int], None] | None,
    out: BinaryIO | None,
) -> None:
    """Hash ``pieces`` (writing them to ``out`` when given); IntegrityError unless they are
    ``size_bytes`` bytes with ``sha256``."""
    digest = hashlib.sha256()
    size = 0
    for piece in pieces:
        digest.update(piece)
        size += len(piece)
        if size > size_bytes:
            break
        if out is not None:
            out.write(piece)
        if progress is not None:
            progress(size)
    if size != size_bytes or digest.hexdigest() != sha256:
        found = f"{size}+" if size > size_bytes else str(size)
        raise IntegrityError(
            f"object {key} holds {found} bytes with sha256 {digest.hexdigest()[:12]}..., "
            f"the artifact has {size_bytes} bytes with sha256 {sha256[:12]}...: "
            "the stored copy is damaged; upload the artifact again"
        )
