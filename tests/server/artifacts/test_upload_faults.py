"""Uploads cut at random points resume from QueryWriteStatus.committed_size, to the byte.

Fifty cut points in all (seeded; the seed is in every failure message): client
cancellations of the Write stream on a live server, and kill -9 of the server mid-stream
followed by a new server process on the same database and object store. committed_size
never decreases and never exceeds what was sent; the finished artifact's bytes hash
(hashlib, over the source file) to the source's. After a kill the running hash is gone, so
the server re-reads the object at finish: a wrong declared sha256 is still caught there.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2 as pb
from agentic.artifacts.v1 import artifacts_pb2_grpc

from tests._identity import metadata
from tests._status import rich_status
from tests._support import wait_for
from tests.server.artifacts._bytestream import create_upload, download, sha256_file
from tests.server.artifacts._server import TIMEOUT, ArtifactServer

SEED = int(os.environ.get("AGENTIC_TEST_SEED", "20261202"))
CHUNK = 256 * 1024
SIZE = 12 * 1024 * 1024 + 4321  # several 5 MiB checkpoints and a remainder
Stub = artifacts_pb2_grpc.ArtifactServiceStub


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ArtifactServer]:
    """A server checkpointing every 5 MiB whose writer lease lapses after 1 s."""
    s = ArtifactServer(
        tmp_path,
        {
            "AGENTIC_OBJECT_STORE_PART_BYTES": str(5 * 1024 * 1024),
            "AGENTIC_UPLOAD_WRITER_LEASE_SECONDS": "1",
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    with path.open("wb") as out:
        for _ in range(SIZE // (1024 * 1024) + 1):
            out.write(os.urandom(1024 * 1024))
        out.truncate(SIZE)
    return path


def _messages(
    path: Path, name: str, start: int, stop: int, finish: bool
) -> Iterator[pb.WriteRequest]:
    with path.open("rb") as f:
        f.seek(start)
        offset, first = start, True
        while offset < stop or first:
            data = f.read(min(CHUNK, stop - offset))
            end = offset + len(data)
            yield pb.WriteRequest(
                resource_name=name if first else "",
                write_offset=offset,
                data=data,
                finish_write=finish and end == SIZE,
            )
            first, offset = False, end


def _status(stub: Stub, name: str) -> pb.QueryWriteStatusResponse:
    response: pb.QueryWriteStatusResponse = stub.QueryWriteStatus(
        pb.QueryWriteStatusRequest(resource_name=name), timeout=TIMEOUT
    )
    return response


def _cancel_after(server: ArtifactServer, path: Path, name: str, start: int, cut: int) -> None:
    """Send [start, cut) and cancel the stream without finishing it.

    On a plain channel with the token as call metadata: the future of a call through an
    intercepted channel does not pass ``cancel()`` on to the call.
    """
    assert server.service is not None
    channel = grpc.insecure_channel(server.service.address)
    stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)

    def attempt() -> bool:
        sent = threading.Event()

        def requests() -> Iterator[pb.WriteRequest]:
            yield from _messages(path, name, start, cut, finish=False)
            sent.set()
            threading.Event().wait(TIMEOUT)  # hold the stream open until it is cancelled

        call = stub.Write.future(requests(), timeout=TIMEOUT, metadata=metadata())
        if sent.wait(5):
            call.cancel()
            return True
        error = call.exception(1)
        # The previous cut's cancelled stream may still hold the upload on a loaded server:
        # ABORTED, as the protocol says; wait for it to end and try again, as a client would.
        if isinstance(error, grpc.RpcError) and error.code() == grpc.StatusCode.ABORTED:
            return False
        raise AssertionError(f"the request generator never sent its bytes: {error}")

    try:
        wait_for(attempt, timeout=15, message=f"the previous stream of {name} to end")
    finally:
        channel.close()


def _write_rest(stub: Stub, path: Path, name: str, start: int) -> int:
    """Finish from ``start``, retrying while a dead stream's lease lapses (bounded)."""
    done: list[int] = []

    def attempt() -> bool:
        try:
            done.append(
                stub.Write(
                    _messages(path, name, start, SIZE, finish=True), timeout=TIMEOUT
                ).committed_size
            )
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.ABORTED:
                raise
            return False
        return True

    wait_for(attempt, timeout=15, message=f"the lease of {name} to lapse")
    return done[0]


def test_fifty_random_cuts_resume_to_the_exact_bytes(server: ArtifactServer, source: Path) -> None:
    rng = random.Random(SEED)
    expected = sha256_file(source)
    project = server.project()
    cancels_per_upload = (15, 15, 14)  # 44 client cancels
    kills = 6  # and 6 crashes of the server: 50 cuts
    for index, count in enumerate(cancels_per_upload):
        stub = server.stub()
        created = create_upload(stub, project, name=f"c{index}.bin", size=SIZE, sha256=expected)
        name, committed = created.upload_name, 0
        for cut in sorted(rng.sample(range(1, SIZE), count)):
            if cut <= committed:
                continue
            _cancel_after(server, source, name, committed, cut)
            status = _status(stub, name)
            assert committed <= status.committed_size <= cut, (
                f"seed {SEED}: committed {status.committed_size} after sending up to {cut} "
                f"from {committed}"
            )
            assert not status.complete
            committed = status.committed_size
        assert _write_rest(stub, source, name, committed) == SIZE
        _check_ready(stub, created.artifact.id, source, expected)

    # Crashes: kill -9 while a stream is mid-way, restart, resume (the cold hash path).
    stub = server.stub()
    created = create_upload(stub, project, name="k.bin", size=SIZE, sha256=expected)
    name, committed = created.upload_name, 0
    for cut in sorted(rng.sample(range(1, SIZE), kills)):
        if cut <= committed:
            continue

        def requests(start: int = committed, stop: int = cut) -> Iterator[pb.WriteRequest]:
            yield from _messages(source, name, start, stop, finish=False)
            server.kill()

        _until_killed(stub, requests)
        server.start()
        stub = server.stub()
        status = _status(stub, name)
        assert committed <= status.committed_size <= cut, f"seed {SEED}: {status} at cut {cut}"
        committed = status.committed_size
    assert _write_rest(stub, source, name, committed) == SIZE
    _check_ready(stub, created.artifact.id, source, expected)


def _until_killed(stub: Stub, requests: Callable[[], Iterator[pb.WriteRequest]]) -> None:
    """Write ``requests()`` (which kills the server at its end) once the lease the previous
    crash left behind has lapsed (ABORTED until then)."""

    def killed() -> bool:
        try:
            stub.Write(requests(), timeout=TIMEOUT)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.ABORTED:
                return False
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise
            return True
        raise AssertionError("the stream ended although the server was killed")

    wait_for(killed, timeout=15, message="a Write stream cut by the kill")


def _check_ready(stub: Stub, artifact_id: str, source: Path, expected: str) -> None:
    artifact = stub.GetArtifact(pb.GetArtifactRequest(id=artifact_id), timeout=TIMEOUT).artifact
    assert artifact.state == pb.ARTIFACT_STATE_READY
    assert artifact.sha256 == expected
    target = source.with_suffix(".down")
    with target.open("wb") as out:
        assert download(stub, artifact_id, out) == SIZE
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
    target.unlink()


def test_a_wrong_sha256_is_caught_after_a_crash_too(server: ArtifactServer, source: Path) -> None:
    stub = server.stub()
    wrong = hashlib.sha256(b"not the source").hexdigest()
    created = create_upload(stub, server.project(), size=SIZE, sha256=wrong)
    half = 6 * 1024 * 1024
    stub.Write(_messages(source, created.upload_name, 0, half, finish=False), timeout=TIMEOUT)
    # A crash loses this process's running hash of the upload: the finish must read back.
    server.kill()
    server.start()
    stub = server.stub()
    committed = _status(stub, created.upload_name).committed_size
    assert committed == half, "a stream that ended commits what it sent"
    with pytest.raises(grpc.RpcError) as info:
        _write_rest(stub, source, created.upload_name, committed)
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    assert rich_status(info.value).reason == "SHA256_MISMATCH"
    assert _status(stub, created.upload_name).committed_size == 0, "reset to start over"
    got = stub.GetArtifact(pb.GetArtifactRequest(id=created.artifact.id), timeout=TIMEOUT).artifact
    assert got.state == pb.ARTIFACT_STATE_UPLOADING
