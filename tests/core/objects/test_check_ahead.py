"""CheckAhead: a local file's size and sha256, checked in a thread beside its reader."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import pytest

from core.objects import CheckAhead, CheckStopped, IntegrityError
from core.objects._store import MAX_READ_CHUNK_BYTES

_SIZE = 3 * MAX_READ_CHUNK_BYTES + 17


def _file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "object"
    data = bytes(range(256)) * (_SIZE // 256) + b"x" * (_SIZE % 256)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_the_right_bytes_pass(tmp_path: Path) -> None:
    path, digest = _file(tmp_path)
    CheckAhead("k", path, size_bytes=_SIZE, sha256=digest).wait()


@pytest.mark.parametrize("size", [_SIZE - 1, _SIZE + 1])
def test_another_size_fails(tmp_path: Path, size: int) -> None:
    path, digest = _file(tmp_path)
    with pytest.raises(IntegrityError, match="damaged"):
        CheckAhead("k", path, size_bytes=size, sha256=digest).wait()


def test_one_changed_byte_fails(tmp_path: Path) -> None:
    path, digest = _file(tmp_path)
    with path.open("r+b") as handle:
        handle.seek(MAX_READ_CHUNK_BYTES + 5)
        handle.write(b"\x00" if handle.read(1) != b"\x00" else b"\x01")
    with pytest.raises(IntegrityError):
        CheckAhead("k", path, size_bytes=_SIZE, sha256=digest).wait()


def test_a_missing_file_fails_with_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CheckAhead("k", tmp_path / "gone", size_bytes=1, sha256="0" * 64).wait()


def test_stop_ends_the_check_before_the_end_of_a_file(tmp_path: Path) -> None:
    # A FIFO the check reads from: it gets one piece, then nothing until stopped.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fed = threading.Event()

    def feed() -> None:
        # The stopped check closes its end: the rest of a write may meet a broken pipe.
        with contextlib.suppress(BrokenPipeError), fifo.open("wb") as writer:
            writer.write(b"a" * MAX_READ_CHUNK_BYTES)
            writer.flush()
            fed.set()
            stopped.wait(10)
            writer.write(b"b" * MAX_READ_CHUNK_BYTES)  # the piece after the stop

    stopped = threading.Event()
    feeder = threading.Thread(target=feed)
    feeder.start()
    check = CheckAhead("k", fifo, size_bytes=10 * MAX_READ_CHUNK_BYTES, sha256="0" * 64)
    assert fed.wait(10), "the feeder never wrote"
    stopped.set()
    check.stop()
    feeder.join(10)
    with pytest.raises(CheckStopped):
        check.wait()
