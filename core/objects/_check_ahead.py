"""A pinned object's size and sha256, checked in a thread while its reader already reads it.

``fetch`` checks a pinned (local, hard-linked) object before it hands the path out: a whole
extra read of the file before the work starts. A reader that publishes nothing until it
has finished may instead start the work at once and let ``CheckAhead`` hash the same file
beside it (hashlib releases the GIL, and the page cache serves both reads), then
``wait()`` before anything computed from the bytes becomes visible. The guarantee stays
the same (nothing built on damaged bytes is ever published); only the order changes.
"""

from __future__ import annotations

import threading
from pathlib import Path

from core.objects._fetch import check_file

__all__ = ["CheckAhead", "CheckStopped"]


class CheckStopped(Exception):
    """``stop()`` ended the check before it reached the end of the file."""


class CheckAhead:
    """The size and sha256 of ``path`` checked against the artifact's, in a daemon thread."""

    def __init__(self, key: str, path: Path, *, size_bytes: int, sha256: str) -> None:
        self._key = key
        self._path = path
        self._size_bytes = size_bytes
        self._sha256 = sha256
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"check-ahead-{key[-12:]}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            check_file(self._key, self._path, self._size_bytes, self._sha256, self._progress)
        except BaseException as exc:  # handed to wait(), never lost in the thread
            self._failure = exc

    def _progress(self, _checked: int) -> None:
        if self._stopping.is_set():
            raise CheckStopped(self._key)

    def wait(self) -> None:
        """Block until the check ends; IntegrityError when the bytes are not the
        artifact's, OSError when the file could not be read, CheckStopped after ``stop``."""
        self._thread.join()
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        """End the check early (its reader gave up) and wait for its thread."""
        self._stopping.set()
        self._thread.join()
