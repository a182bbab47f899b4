"""The ObjectStore contract, run against both backends: the file store and S3 (a moto server).

What the API server and the workers rely on: round trips of any size, a staged upload that
nobody can read, continuation from a recorded checkpoint in a new writer (as after a crash
or in another process) that drops what a dead writer did after it, ranged reads, delete and
abort that leave no bytes behind, key checking, ``open_store``'s URLs, ``fetch``'s
verification, and S3 failures surfacing as ObjectStoreError.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from core.objects import (
    MAX_READ_CHUNK_BYTES,
    Checkpoint,
    IntegrityError,
    ObjectMissingError,
    ObjectStore,
    ObjectStoreError,
    StagingLostError,
    UploadWriter,
    fetch,
    open_store,
    sha256_of,
)
from core.objects._file import PIN_MAX_AGE_SECONDS, FileObjectStore
from core.objects._s3 import MIN_PART_BYTES, S3ObjectStore
from devtools.s3 import S3Server
from tests.core.objects.conftest import Backend

KEY = "projects/p1/artifacts/a1"
OTHER = "projects/p1/artifacts/a2"


def source(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ at every offset (a misplaced byte changes the digest)."""
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048  # 64 KiB
    counter = bytearray()
    while len(counter) < size:
        counter += hashlib.sha256(len(counter).to_bytes(8, "big")).digest() + block
    return bytes(counter[:size])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_all(writer: UploadWriter, data: bytes, chunk: int) -> list[Checkpoint]:
    """Write ``data`` in ``chunk``-sized pieces; the checkpoints ``write`` returned.

    Each checkpoint is the writer's committed size, never beyond what it was given, and
    never behind the one before.
    """
    checkpoints = []
    for start in range(0, len(data), chunk):
        before = writer.committed
        checkpoint = writer.write(data[start : start + chunk])
        assert before <= writer.committed <= writer.written
        if checkpoint is not None:
            assert checkpoint.committed == writer.committed
            checkpoints.append(checkpoint)
    return checkpoints


def chunk_of(backend: Backend) -> int:
    """A write size that does not divide the checkpoint step: writes straddle parts."""
    return backend.step // 5 + 7


def upload(backend: Backend, key: str, data: bytes) -> list[Checkpoint]:
    store = backend.store
    writer = store.open_writer(key, 0, store.begin_upload(key))
    checkpoints = write_all(writer, data, chunk_of(backend))
    writer.finish()
    return checkpoints


def read_all(store: ObjectStore, key: str, offset: int = 0, limit: int = 0) -> bytes:
    return b"".join(store.read(key, offset, limit))


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size_of",
    [lambda step: 0, lambda step: 1, lambda step: step, lambda step: 3 * step + 12345],
    ids=["0 B", "1 B", "one part", "parts and a remainder"],
)
def test_round_trip_keeps_every_byte(backend: Backend, size_of: Callable[[int], int]) -> None:
    data = source(size_of(backend.step))
    checkpoints = upload(backend, KEY, data)

    assert backend.store.size(KEY) == len(data)
    pieces = list(backend.store.read(KEY, chunk_bytes=100_000))
    assert all(0 < len(piece) <= 100_000 for piece in pieces)
    assert sha256(b"".join(pieces)) == sha256(data)
    assert backend.stored() == [KEY]
    assert backend.staged() == [], "finish left staging behind"
    # Durable every step on its own: where exactly is the backend's choice (a part boundary,
    # the first write past a step), but never more than a step and a write apart.
    committed = [0, *(c.committed for c in checkpoints), len(data)]
    gaps = [after - before for before, after in itertools.pairwise(committed)]
    assert all(backend.step <= gap < backend.step + chunk_of(backend) for gap in gaps[:-1])
    assert gaps[-1] < backend.step + chunk_of(backend)


def test_writer_counts_written_and_committed_bytes(backend: Backend) -> None:
    store = backend.store
    writer = store.open_writer(KEY, 0, store.begin_upload(KEY))
    assert (writer.written, writer.committed) == (0, 0)
    assert writer.write(b"x" * 10) is None
    assert (writer.written, writer.committed) == (10, 0)
    checkpoint = writer.checkpoint()
    assert checkpoint.committed == writer.committed == 10
    assert writer.write(b"y" * backend.step) is not None  # crossed a step: durable on its own
    assert writer.committed <= writer.written == 10 + backend.step
    writer.close()


def test_staged_upload_is_not_readable_and_does_not_replace_the_object(backend: Backend) -> None:
    store = backend.store
    old = source(1000, seed=1)
    upload(backend, KEY, old)

    for key in (KEY, OTHER):
        writer = store.open_writer(key, 0, store.begin_upload(key))
        write_all(writer, source(backend.step + backend.step // 2), chunk_of(backend))
        writer.checkpoint()
        writer.close()

    assert store.size(OTHER) is None
    with pytest.raises(ObjectMissingError):
        store.read(OTHER)
    assert read_all(store, KEY) == old, "a staged upload showed through"
    assert backend.stored() == [KEY]


# --- continuing an upload -----------------------------------------------------------------


def test_continue_after_a_part_drops_the_unrecorded_bytes(backend: Backend) -> None:
    data = source(3 * backend.step + 999)
    store = backend.store
    first = store.open_writer(KEY, 0, store.begin_upload(KEY))
    recorded = write_all(first, data[: backend.step + backend.step // 2], chunk_of(backend))[-1]
    assert backend.step <= recorded.committed < backend.step + chunk_of(backend)
    first.close()  # the process dies: half a step written after the checkpoint is lost

    other = backend.reopen()  # another process
    second = other.open_writer(KEY, recorded.committed, recorded.state)
    assert second.committed == second.written == recorded.committed
    write_all(second, data[recorded.committed :], chunk_of(backend))
    second.finish()

    assert sha256(read_all(other, KEY)) == sha256(data)
    assert backend.staged() == []


def test_continue_from_explicit_checkpoints_through_a_chain_of_writers(backend: Backend) -> None:
    """Each stream ends unfinished with checkpoint(); the next, in a new store, goes on."""
    data = source(3 * backend.step + 4321)
    store = backend.store
    state = store.begin_upload(KEY)
    committed = 0
    # Cuts inside the first step (a tail only), past a part (parts and a tail), one byte on.
    for cut in (backend.step // 3, 2 * backend.step + 17, 2 * backend.step + 18):
        writer = backend.reopen().open_writer(KEY, committed, state)
        write_all(writer, data[committed:cut], chunk_of(backend))
        checkpoint = writer.checkpoint()
        writer.close()
        assert checkpoint.committed == cut
        committed, state = checkpoint.committed, checkpoint.state
    assert backend.store.size(KEY) is None

    last = backend.reopen().open_writer(KEY, committed, state)
    write_all(last, data[committed:], chunk_of(backend))
    last.finish()

    assert sha256(read_all(store, KEY)) == sha256(data)
    assert backend.staged() == []


def test_continue_ignores_what_a_dead_writer_did_after_the_recorded_checkpoint(
    backend: Backend,
) -> None:
    """The writer went on after its last recorded checkpoint (the caller died before it
    could record more): it checkpointed again, and wrote and checkpointed past a step."""
    data = source(3 * backend.step + 77)
    store = backend.store
    writer = store.open_writer(KEY, 0, store.begin_upload(KEY))
    half = backend.step // 2
    write_all(writer, data[:half], chunk_of(backend))
    recorded = writer.checkpoint()
    write_all(writer, data[half : half + 1000], chunk_of(backend))
    writer.checkpoint()  # a longer checkpoint over the same bytes, never recorded
    write_all(writer, data[half + 1000 : 2 * backend.step + 5], chunk_of(backend))
    writer.checkpoint()  # and one past a step, never recorded
    writer.close()

    resumed = backend.reopen().open_writer(KEY, recorded.committed, recorded.state)
    assert resumed.committed == half
    write_all(resumed, data[half:], chunk_of(backend))
    resumed.finish()

    assert sha256(read_all(store, KEY)) == sha256(data)
    assert backend.staged() == [], "a dead writer's staging outlived finish"


@pytest.mark.parametrize("lost", ["within a step", "past a step"])
def test_bytes_after_the_last_checkpoint_are_not_part_of_the_continued_object(
    backend: Backend, lost: str
) -> None:
    """A dead writer's unrecorded bytes (on disk, or an S3 part) never reach the object,
    even when the continuation is shorter than what it wrote and has other bytes."""
    data = source(3 * backend.step)
    store = backend.store
    writer = store.open_writer(KEY, 0, store.begin_upload(KEY))
    write_all(writer, data[:100], chunk_of(backend))
    recorded = writer.checkpoint()
    extra = backend.step // 2 if lost == "within a step" else 2 * backend.step
    write_all(writer, data[100 : 100 + extra], chunk_of(backend))
    writer.close()

    rest = source(50, seed=7)
    resumed = backend.reopen().open_writer(KEY, recorded.committed, recorded.state)
    resumed.write(rest)
    resumed.finish()

    assert read_all(store, KEY) == data[:100] + rest
    assert backend.staged() == []


def test_continue_refuses_more_committed_bytes_than_were_checkpointed(backend: Backend) -> None:
    store = backend.store
    writer = store.open_writer(KEY, 0, store.begin_upload(KEY))
    writer.write(b"z" * 100)
    checkpoint = writer.checkpoint()
    writer.close()
    with pytest.raises(StagingLostError):
        store.open_writer(KEY, checkpoint.committed + 1, checkpoint.state)


def test_continue_needs_a_staged_upload(backend: Backend) -> None:
    store = backend.store
    state = store.begin_upload(KEY)
    store.abort_upload(KEY, state)
    with pytest.raises(ObjectMissingError):
        store.open_writer(KEY, 0, state)


# --- reads --------------------------------------------------------------------------------

READS: dict[str, tuple[Callable[[int, int], int], int]] = {
    "start": (lambda n, step: 0, 10),
    "across a part boundary": (lambda n, step: step - 5, 10),
    "to the end": (lambda n, step: n - 10, 0),
    "limit past the end": (lambda n, step: n - 10, 100),
    "whole": (lambda n, step: 0, 0),
    "at the end": (lambda n, step: n, 0),
    "at the end with a limit": (lambda n, step: n, 10),
    "past the end": (lambda n, step: n + 1, 0),
}


@pytest.mark.parametrize("case", READS, ids=list(READS))
def test_read_from_an_offset_up_to_a_limit(backend: Backend, case: str) -> None:
    data = source(backend.step + 333)
    upload(backend, KEY, data)
    offset_of, limit = READS[case]
    offset = offset_of(len(data), backend.step)
    pieces = list(backend.store.read(KEY, offset, limit, chunk_bytes=4096))
    assert all(0 < len(piece) <= 4096 for piece in pieces)
    assert b"".join(pieces) == data[offset : offset + limit if limit else None]


def test_reading_an_empty_object_yields_nothing(backend: Backend) -> None:
    upload(backend, KEY, b"")
    assert list(backend.store.read(KEY)) == []
    assert list(backend.store.read(KEY, 0, 10)) == []


def test_reading_a_missing_object_is_object_missing(backend: Backend) -> None:
    with pytest.raises(ObjectMissingError):
        backend.store.read(KEY)
    assert backend.store.size(KEY) is None


# --- removal ------------------------------------------------------------------------------


def test_delete_removes_the_object(backend: Backend) -> None:
    upload(backend, KEY, source(backend.step + 1))
    backend.store.delete(KEY)
    assert backend.store.size(KEY) is None
    with pytest.raises(ObjectMissingError):
        backend.store.read(KEY)
    assert backend.stored() == []
    backend.store.delete(KEY)  # missing is fine


def test_abort_removes_the_staged_bytes(backend: Backend) -> None:
    store = backend.store
    state = store.begin_upload(KEY)
    writer = store.open_writer(KEY, 0, state)
    write_all(writer, source(backend.step + 10), chunk_of(backend))
    checkpoint = writer.checkpoint()  # S3: a part and a tail object
    writer.close()
    assert backend.staged() != []

    store.abort_upload(KEY, checkpoint.state)
    assert backend.staged() == []
    assert backend.stored() == []
    store.abort_upload(KEY, checkpoint.state)  # missing is fine
    with pytest.raises(ObjectMissingError):
        store.open_writer(KEY, checkpoint.committed, checkpoint.state)


def test_check_passes_on_a_working_store(backend: Backend) -> None:
    backend.store.check()


# --- keys ---------------------------------------------------------------------------------

BAD_KEYS = ["../x", "A", "a/../b", "a//b", "", "/a", "a/", "a.b", "x" * 513]
CALLS: dict[str, Callable[[ObjectStore, str, str], object]] = {
    "begin_upload": lambda store, key, state: store.begin_upload(key),
    "open_writer": lambda store, key, state: store.open_writer(key, 0, state),
    "abort_upload": lambda store, key, state: store.abort_upload(key, state),
    "read": lambda store, key, state: store.read(key),
    "size": lambda store, key, state: store.size(key),
    "delete": lambda store, key, state: store.delete(key),
}


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_outside_the_pattern_are_refused(backend: Backend, key: str, call: str) -> None:
    state = backend.store.begin_upload(KEY)  # a real state: only the key is wrong
    with pytest.raises(ValueError, match="not an object key"):
        CALLS[call](backend.store, key, state)
    assert backend.stored() == []


# --- fetch --------------------------------------------------------------------------------


def test_fetch_gives_a_verified_local_file(backend: Backend, tmp_path: Path) -> None:
    data = source(max(backend.step, MAX_READ_CHUNK_BYTES) + 5)  # more than one piece
    upload(backend, KEY, data)
    assert sha256_of(backend.store, KEY) == (len(data), sha256(data))

    checked: list[int] = []
    path = fetch(
        backend.store,
        KEY,
        size_bytes=len(data),
        sha256=sha256(data),
        directory=tmp_path,
        progress=checked.append,
    )
    assert path.read_bytes() == data
    assert checked == sorted(checked)
    assert checked[-1] == len(data)
    assert len(checked) > 1
    if backend.name == "file":
        # A hard link of the object, not a copy; it outlives the object's deletion.
        assert isinstance(backend.store, FileObjectStore)
        assert path.samefile(backend.store.root / KEY)
        backend.store.delete(KEY)
        assert backend.stored() == []
        assert path.read_bytes() == data
    else:
        assert path.parent == tmp_path
    path.unlink()
    assert backend.staged() == []


def test_a_fetch_stopped_by_its_progress_leaves_no_file(backend: Backend, tmp_path: Path) -> None:
    data = source(backend.step + 5)
    upload(backend, KEY, data)

    class Stop(Exception):
        pass

    def stop(done: int) -> None:
        raise Stop

    directory = tmp_path / "fetched"
    directory.mkdir()
    with pytest.raises(Stop):
        fetch(
            backend.store,
            KEY,
            size_bytes=len(data),
            sha256=sha256(data),
            directory=directory,
            progress=stop,
        )
    assert list(directory.iterdir()) == []
    assert backend.staged() == []


@pytest.mark.parametrize("change", ["same size", "longer", "shorter"])
def test_fetch_of_a_tampered_object_fails_and_leaves_no_file(
    backend: Backend, tmp_path: Path, change: str
) -> None:
    data = source(backend.step + 5)
    upload(backend, KEY, data)
    tampered = {
        "same size": data[:100] + b"!" + data[101:],
        "longer": data + b"!",
        "shorter": data[:-1],
    }[change]
    backend.tamper(KEY, tampered)
    directory = tmp_path / "fetched"
    directory.mkdir()
    with pytest.raises(IntegrityError, match="upload the artifact again"):
        fetch(backend.store, KEY, size_bytes=len(data), sha256=sha256(data), directory=directory)
    assert list(directory.iterdir()) == []
    assert backend.staged() == []  # no pin left behind either


# --- open_store ---------------------------------------------------------------------------


def test_open_store_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"file://{tmp_path}/objects")
    assert isinstance(store, FileObjectStore)
    assert store.root == tmp_path / "objects"
    store = open_store(f"file://localhost{tmp_path}")
    assert isinstance(store, FileObjectStore)
    assert store.root == tmp_path
    monkeypatch.chdir(tmp_path)
    store = open_store("file:var/objects", part_bytes=1024)
    assert isinstance(store, FileObjectStore)
    assert store.root == tmp_path / "var" / "objects"
    store.check()


def test_open_store_s3_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    # Building a client connects nowhere; these only have to be present.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unused")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unused")
    for url, bucket, prefix in [
        ("s3://agentic/objects", "agentic", "objects"),
        ("s3://agentic/objects/v1/", "agentic", "objects/v1"),
        ("s3://agentic", "agentic", ""),
    ]:
        store = open_store(url)
        assert isinstance(store, S3ObjectStore)
        assert (store.bucket, store.prefix, store.url) == (bucket, prefix, url.rstrip("/"))
        assert store.part_bytes == 8 * 1024 * 1024
        assert store.name(KEY) == f"{prefix}/{KEY}".lstrip("/")
        store.client.close()
    store = open_store("s3://agentic/objects", part_bytes=MIN_PART_BYTES)
    assert isinstance(store, S3ObjectStore)
    assert store.part_bytes == MIN_PART_BYTES
    store.client.close()


@pytest.mark.parametrize(
    ("url", "part_bytes", "message"),
    [
        ("ftp://host/objects", None, "must be file:// or s3://"),
        ("objects", None, "must be file:// or s3://"),
        ("file://elsewhere/objects", None, "not host 'elsewhere'"),
        ("s3:///objects", None, "names a bucket"),
        ("s3://agentic/objects", MIN_PART_BYTES - 1, "at least"),  # S3 refuses smaller parts
    ],
)
def test_open_store_refuses_bad_urls(url: str, part_bytes: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url, part_bytes=part_bytes)


# --- S3 failures --------------------------------------------------------------------------


def test_s3_check_fails_on_a_missing_bucket(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    store = S3ObjectStore("no-such-bucket", "objects")
    try:
        with pytest.raises(ObjectStoreError, match="s3://no-such-bucket"):
            store.check()
    finally:
        store.client.close()


@pytest.mark.timeout(60)
def test_s3_outage_raises_object_store_errors_quickly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with S3Server(log_path=tmp_path / "moto.log") as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        bucket = f"outage-{uuid.uuid4().hex[:12]}"
        server.create_bucket(bucket)
        store = S3ObjectStore(
            bucket,
            "objects",
            part_bytes=MIN_PART_BYTES,
            connect_timeout_seconds=0.5,
            read_timeout_seconds=1,
            max_attempts=2,
        )
        try:
            big = source(4 * MIN_PART_BYTES)
            writer = store.open_writer(KEY, 0, store.begin_upload(KEY))
            write_all(writer, big, 1024 * 1024)
            writer.finish()
            staged = store.open_writer(OTHER, 0, store.begin_upload(OTHER))
            staged.write(b"x" * 100)
            recorded = staged.checkpoint()
            reading = store.read(KEY, chunk_bytes=64 * 1024)
            assert len(next(reading)) == 64 * 1024

            server.kill()
            calls: dict[str, Callable[[], object]] = {
                "check": store.check,
                "size": lambda: store.size(KEY),
                "read": lambda: store.read(KEY),
                "the rest of a read": lambda: b"".join(reading),
                "delete": lambda: store.delete(KEY),
                "begin_upload": lambda: store.begin_upload(KEY),
                "open_writer": lambda: store.open_writer(OTHER, recorded.committed, recorded.state),
                "write (a part)": lambda: staged.write(b"y" * MIN_PART_BYTES),
                "checkpoint": staged.checkpoint,
                "finish": staged.finish,
                "abort_upload": lambda: store.abort_upload(OTHER, recorded.state),
            }
            for name, call in calls.items():
                started = time.monotonic()
                with pytest.raises(ObjectStoreError) as caught:
                    call()
                elapsed = time.monotonic() - started
                assert not isinstance(caught.value, BotoCoreError | ClientError), name
                assert not isinstance(caught.value, ObjectMissingError), name
                assert f"s3://{bucket}" in str(caught.value), (name, str(caught.value))
                assert elapsed < 5, f"{name} took {elapsed:.1f}s to fail"
        finally:
            store.client.close()


def test_s3_refuses_parts_below_the_minimum() -> None:
    with pytest.raises(ValueError, match="at least"):
        S3ObjectStore("agentic", "objects", part_bytes=MIN_PART_BYTES - 1)


def test_file_store_check_fails_when_the_root_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(ObjectStoreError):
        FileObjectStore(blocker / "objects").check()
    assert os.listdir(tmp_path) == ["file"]


def test_a_pin_left_by_a_dead_reader_is_removed_by_the_next(tmp_path: Path) -> None:
    store = FileObjectStore(tmp_path / "objects")
    data = source(1000)
    writer = store.open_writer(KEY, 0, store.begin_upload(KEY))
    writer.write(data)
    writer.finish()
    pins = tmp_path / "objects" / ".staging" / "pins"
    stale = store.pin(KEY)
    old = pins / f"{int(time.time()) - PIN_MAX_AGE_SECONDS - 1}-1-dead"
    stale.rename(old)
    young = store.pin(KEY)  # the stale one goes; this one, and a live reader's, stay
    live = store.pin(KEY)
    assert sorted(pins.iterdir()) == sorted([young, live])
    assert young.read_bytes() == live.read_bytes() == data
