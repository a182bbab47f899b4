"""The ``file://`` object store: a directory on a local or shared file system.

Object ``k`` is the file ``<root>/k``; its upload is staged in ``<root>/.staging/k`` and
renamed into place by ``finish`` (after an fsync; the directory is fsynced too), so a
reader sees a whole object or none. A checkpoint is an fsync: the committed size is then
the staged file's length, which needs no further state (``state`` is always "").
Continuing an upload truncates the staged file to the committed size, dropping bytes a
dead writer wrote after its last checkpoint. ``pin`` hands a worker a hard link of an
object under ``<root>/.staging/pins`` to read in place instead of a copy (a reader that
died leaves its link; the next ``pin`` removes links older than ``PIN_MAX_AGE_SECONDS``).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Generator
from io import FileIO
from pathlib import Path
from typing import BinaryIO

from core.objects._store import (
    MAX_READ_CHUNK_BYTES,
    Checkpoint,
    ObjectMissingError,
    ObjectStoreError,
    StagingLostError,
    check_key,
)

__all__ = ["FileObjectStore", "fsync_directory"]

DEFAULT_CHECKPOINT_BYTES = 8 * 1024 * 1024


def fsync_directory(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (fsync of the directory itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileWriter:
    """Appends to a staged file; fsyncs every ``checkpoint_bytes``."""

    def __init__(self, staged: Path, final: Path, handle: FileIO, committed: int, every: int):
        self._staged = staged
        self._final = final
        self._handle = handle
        self._committed = committed
        self._written = committed
        self._every = every

    @property
    def committed(self) -> int:
        return self._committed

    @property
    def written(self) -> int:
        return self._written

    def write(self, data: bytes) -> Checkpoint | None:
        try:
            # Unbuffered: every byte accepted is in the file when write returns, so nothing
            # of this writer's reaches the file later (a writer that lost its upload to
            # another cannot flush into the other's bytes when it is closed).
            view = memoryview(data)
            while view:
                view = view[self._handle.write(view) :]
        except OSError as exc:
            raise ObjectStoreError(f"writing {self._staged}: {exc}") from exc
        self._written += len(data)
        if self._written - self._committed >= self._every:
            return self.checkpoint()
        return None

    def checkpoint(self) -> Checkpoint:
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise ObjectStoreError(f"syncing {self._staged}: {exc}") from exc
        self._committed = self._written
        return Checkpoint(self._committed, "")

    def finish(self) -> None:
        self.checkpoint()
        self._handle.close()
        try:
            self._final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._staged, self._final)
            fsync_directory(self._final.parent)
        except OSError as exc:
            raise ObjectStoreError(f"publishing {self._final}: {exc}") from exc

    def close(self) -> None:
        self._handle.close()


PIN_MAX_AGE_SECONDS = 6 * 3600
"""A pin older than this belongs to no reader: the longest task's hard limit stays below
the broker's consumer timeout (30 min by default)."""


def _remove_stale_pins(pins: Path, before: int) -> None:
    for entry in os.scandir(pins):
        created, _, _ = entry.name.partition("-")
        if created.isdigit() and int(created) < before:
            with contextlib.suppress(FileNotFoundError):  # another reader was first
                os.unlink(entry.path)


class FileObjectStore:
    """Objects as files under ``root``."""

    def __init__(self, root: Path, *, checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES) -> None:
        self.root = root
        self.url = root.as_uri()
        self._checkpoint_bytes = checkpoint_bytes

    def _final(self, key: str) -> Path:
        return self.root / check_key(key)

    def _staged(self, key: str) -> Path:
        return self.root / ".staging" / check_key(key)

    def begin_upload(self, key: str) -> str:
        staged = self._staged(key)
        try:
            staged.parent.mkdir(parents=True, exist_ok=True)
            with staged.open("wb") as handle:
                os.fsync(handle.fileno())
        except OSError as exc:
            raise ObjectStoreError(f"staging {staged}: {exc}") from exc
        return ""

    def open_writer(self, key: str, committed: int, state: str) -> _FileWriter:
        staged = self._staged(key)
        try:
            handle = staged.open("r+b", buffering=0)
        except FileNotFoundError:
            raise ObjectMissingError(f"no staged upload for {key}") from None
        except OSError as exc:
            raise ObjectStoreError(f"opening {staged}: {exc}") from exc
        try:
            length = os.fstat(handle.fileno()).st_size
            if length < committed:
                raise StagingLostError(f"{staged} holds {length} bytes, {committed} were committed")
            handle.truncate(committed)
            handle.seek(committed)
        except BaseException:
            handle.close()
            raise
        return _FileWriter(staged, self._final(key), handle, committed, self._checkpoint_bytes)

    def abort_upload(self, key: str, state: str) -> None:
        try:
            self._staged(key).unlink(missing_ok=True)
        except OSError as exc:
            raise ObjectStoreError(f"removing the staged upload of {key}: {exc}") from exc

    def read(
        self, key: str, offset: int = 0, limit: int = 0, *, chunk_bytes: int = MAX_READ_CHUNK_BYTES
    ) -> Generator[bytes, None, None]:
        if offset < 0 or limit < 0:
            raise ValueError(f"offset and limit must not be negative: {offset}, {limit}")
        path = self._final(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise ObjectMissingError(f"no object {key}") from None
        except OSError as exc:
            raise ObjectStoreError(f"opening {path}: {exc}") from exc
        return self._pieces(handle, offset, limit, chunk_bytes)

    @staticmethod
    def _pieces(
        handle: BinaryIO, offset: int, limit: int, chunk_bytes: int
    ) -> Generator[bytes, None, None]:
        with handle:
            handle.seek(offset)
            left = limit if limit > 0 else -1
            while left != 0:
                want = chunk_bytes if left < 0 else min(chunk_bytes, left)
                piece = handle.read(want)
                if not piece:
                    return
                if left > 0:
                    left -= len(piece)
                yield piece

    def size(self, key: str) -> int | None:
        try:
            return self._final(key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ObjectStoreError(f"reading the size of {key}: {exc}") from exc

    def pin(self, key: str) -> Path:
        """A hard link of the object under ``.staging/pins/``: the same bytes with no copy,
        on the store's own file system (so the link always works), readable even after
        the object is deleted, until the caller removes it.

        A link's name starts with its creation time; links older than
        ``PIN_MAX_AGE_SECONDS`` were left by a reader that died and are removed here, by
        the next reader (a link's own mtime is its object's, so it cannot tell).
        """
        pins = self.root / ".staging" / "pins"
        now = int(time.time())
        link = pins / f"{now}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            pins.mkdir(parents=True, exist_ok=True)
            _remove_stale_pins(pins, now - PIN_MAX_AGE_SECONDS)
            os.link(self._final(key), link)
        except FileNotFoundError:
            raise ObjectMissingError(f"no object {key}") from None
        except OSError as exc:
            raise ObjectStoreError(f"pinning {key}: {exc}") from exc
        return link

    def delete(self, key: str) -> None:
        try:
            self._final(key).unlink(missing_ok=True)
        except OSError as exc:
            raise ObjectStoreError(f"removing {key}: {exc}") from exc

    def check(self) -> None:
        probe = self.root / ".staging" / f".probe-{os.getpid()}"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ObjectStoreError(f"{self.root} is not writable: {exc}") from exc
