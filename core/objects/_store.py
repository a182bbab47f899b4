"""The object-store contract: where artifact bytes live, apart from the database.

Two backends implement it (``file://`` in ``_file``, ``s3://`` in ``_s3``); the API server
writes through it and the workers read through it, so both see the same objects. Every
method is synchronous and blocking (file IO, boto3): callers in an event loop run it in a
thread.

Keys are derived by the server (``object_key``), never from client input: a client's file
name is a display name, not a path. A backend refuses any key outside ``KEY_PATTERN``.

An upload is staged until ``UploadWriter.finish`` makes it visible under its key: a
partial upload is never readable as an object. Its progress is durable in steps
(checkpoints): ``UploadWriter.committed`` counts only bytes that survive a crash of the
writing process, and the opaque ``state`` string that goes with it (the backend's own
bookkeeping, e.g. S3 part numbers and ETags) is what the caller stores beside the committed
size and hands back to ``open_writer`` to continue, from any process.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = [
    "KEY_PATTERN",
    "MAX_READ_CHUNK_BYTES",
    "Checkpoint",
    "ObjectMissingError",
    "ObjectStore",
    "ObjectStoreError",
    "StagingLostError",
    "UploadWriter",
    "check_key",
    "object_key",
]

KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*(/[a-z0-9][a-z0-9-]*)*$")
"""Lower-case letters, digits and dashes in ``/``-separated segments: no ``..``, no dots."""

MAX_READ_CHUNK_BYTES = 1024 * 1024
"""The largest piece ``ObjectStore.read`` yields (and a ByteStream message carries)."""


class ObjectStoreError(Exception):
    """The store failed (IO error, S3 error, unreachable endpoint); the operation may be retried."""


class ObjectMissingError(ObjectStoreError):
    """No object (or no staged upload) under the key."""


class StagingLostError(ObjectStoreError):
    """A staged upload holds fewer bytes than were committed: its bytes cannot be continued."""


def check_key(key: str) -> str:
    """``key`` if it is a server-derived key (``KEY_PATTERN``); ValueError otherwise."""
    if not KEY_PATTERN.fullmatch(key) or len(key) > 512:
        raise ValueError(f"not an object key: {key!r}")
    return key


def object_key(project_id: str, artifact_id: str) -> str:
    """Where an artifact's bytes live: ``projects/<project id>/artifacts/<artifact id>``."""
    return check_key(f"projects/{project_id}/artifacts/{artifact_id}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Progress made durable: ``committed`` bytes, continued from ``state``."""

    committed: int
    state: str


class UploadWriter(Protocol):
    """Appends to one staged upload; at most one writer per upload at a time.

    ``write`` may make progress durable on its own (every part or so many bytes) and then
    returns the checkpoint to record; ``checkpoint`` makes everything written so far
    durable. Bytes written after the last checkpoint are lost if the process dies.
    """

    @property
    def committed(self) -> int:
        """Bytes durable at the last checkpoint."""
        ...

    @property
    def written(self) -> int:
        """Bytes accepted so far, durable or not (``committed`` <= ``written``)."""
        ...

    def write(self, data: bytes) -> Checkpoint | None:
        """Append ``data``; a Checkpoint when this made progress durable, else None."""
        ...

    def checkpoint(self) -> Checkpoint:
        """Make every written byte durable."""
        ...

    def finish(self) -> None:
        """Make the upload visible as the object under its key (it replaces any older one).

        The writer is spent afterwards; the staging is gone.
        """
        ...

    def close(self) -> None:
        """Release the writer's resources without committing more (the staging remains)."""
        ...


class ObjectStore(Protocol):
    """Objects under server-derived keys, and their staged uploads."""

    url: str
    """The configured location (``file:///...`` or ``s3://bucket/prefix``), for logs."""

    def begin_upload(self, key: str) -> str:
        """Stage a new, empty upload for ``key``; returns its initial state."""
        ...

    def open_writer(self, key: str, committed: int, state: str) -> UploadWriter:
        """Continue the staged upload of ``key`` from ``committed`` bytes and ``state``.

        Bytes past ``committed`` that a dead writer left behind are discarded.
        ObjectMissingError when nothing is staged; StagingLostError when fewer than
        ``committed`` bytes are.
        """
        ...

    def abort_upload(self, key: str, state: str) -> None:
        """Remove a staged upload and its bytes (missing is fine)."""
        ...

    def read(
        self, key: str, offset: int = 0, limit: int = 0, *, chunk_bytes: int = MAX_READ_CHUNK_BYTES
    ) -> Generator[bytes, None, None]:
        """The object's bytes from ``offset``, at most ``limit`` (0: to the end), in pieces of
        at most ``chunk_bytes``. ObjectMissingError when there is no object."""
        ...

    def size(self, key: str) -> int | None:
        """The object's size, or None when there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object (missing is fine)."""
        ...

    def pin(self, key: str) -> Path | None:
        """A local file that is the object, for reading in place, or None when the store
        has no local files (S3). The file stays readable until the caller removes it, even
        if the object is deleted meanwhile; the caller never writes it.
        ObjectMissingError when there is no object."""
        ...

    def check(self) -> None:
        """Raise ObjectStoreError unless the store answers: the directory is writable, or
        the endpoint is reachable with these credentials and the bucket exists (health)."""
        ...
