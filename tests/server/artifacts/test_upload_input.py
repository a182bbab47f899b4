"""Bad input tried as a new user would, against a real server: each gets its exact status.

Every case names the gRPC code and the ErrorInfo reason (or the field violation) a user
acts on, and checks that nothing became READY that should not have.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2 as pb
from agentic.artifacts.v1 import artifacts_pb2_grpc

from tests._identity import Role
from tests._status import RichStatus, rich_status
from tests._support import REPO
from tests.server.artifacts._bytestream import create_upload, download, write_requests
from tests.server.artifacts._server import TIMEOUT, ArtifactServer, error_metadata

Stub = artifacts_pb2_grpc.ArtifactServiceStub
QUOTA = 8 * 1024 * 1024
MAX_OPEN = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactServer]:
    s = ArtifactServer(
        tmp_path_factory.mktemp("input"),
        {
            "AGENTIC_PROJECT_QUOTA_BYTES": str(QUOTA),
            "AGENTIC_MAX_OPEN_UPLOADS": str(MAX_OPEN),
            "AGENTIC_ARTIFACT_MAX_BYTES": str(4 * QUOTA),
        },
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _user(server: ArtifactServer) -> tuple[Stub, str]:
    """A fresh Technical Lead with a project of their own (its own quota and open uploads)."""
    subject = f"lead-{uuid.uuid4().hex[:8]}"
    project = server.project(owner=subject)
    return server.stub(subject, (Role.TECHNICAL_LEAD,)), project


def _fails(call: object, *args: object, **kwargs: object) -> tuple[grpc.RpcError, RichStatus]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)  # type: ignore[operator]  # a stub method
    return info.value, rich_status(info.value)


def _write(stub: Stub, name: str, data: bytes, *, offset: int = 0, finish: bool = True) -> int:
    response = (
        stub.Write(
            write_requests(io.BytesIO(data), name, offset=0, finish=finish),
            timeout=TIMEOUT,
        )
        if offset == 0
        else stub.Write(
            iter(
                [
                    pb.WriteRequest(
                        resource_name=name, write_offset=offset, data=data, finish_write=finish
                    )
                ]
            ),
            timeout=TIMEOUT,
        )
    )
    return int(response.committed_size)


def _state(stub: Stub, artifact_id: str) -> int:
    got = stub.GetArtifact(pb.GetArtifactRequest(id=artifact_id), timeout=TIMEOUT)
    return int(got.artifact.state)


def test_wrong_offsets_name_the_expected_one(server: ArtifactServer) -> None:
    stub, project = _user(server)
    created = create_upload(stub, project, size=300)
    assert _write(stub, created.upload_name, b"a" * 100, finish=False) == 100
    for wrong in (0, 50, 150):  # overlap, overlap, gap
        error, status = _fails(
            stub.Write,
            iter(
                [pb.WriteRequest(resource_name=created.upload_name, write_offset=wrong, data=b"b")]
            ),
            timeout=TIMEOUT,
        )
        assert error.code() == grpc.StatusCode.OUT_OF_RANGE
        assert status.reason == "WRITE_OFFSET_MISMATCH"
        assert error_metadata(error)["expected_offset"] == "100"
    # A later message of the same stream with a gap.
    error, _ = _fails(
        stub.Write,
        iter(
            [
                pb.WriteRequest(
                    resource_name=created.upload_name, write_offset=100, data=b"c" * 10
                ),
                pb.WriteRequest(write_offset=200, data=b"d"),
            ]
        ),
        timeout=TIMEOUT,
    )
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    assert error_metadata(error)["expected_offset"] == "110"
    assert _state(stub, created.artifact.id) == pb.ARTIFACT_STATE_UPLOADING


def test_size_and_sha256_are_checked_at_finish(server: ArtifactServer) -> None:
    stub, project = _user(server)
    data = os.urandom(5000)
    short = create_upload(stub, project, size=len(data))
    error, status = _fails(_write, stub, short.upload_name, data[:4000])
    assert (error.code(), status.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SIZE_MISMATCH")
    assert _state(stub, short.artifact.id) == pb.ARTIFACT_STATE_UPLOADING
    # Write the rest and finish: it works.
    assert _write(stub, short.upload_name, data[4000:], offset=4000) == len(data)
    assert _state(stub, short.artifact.id) == pb.ARTIFACT_STATE_READY

    wrong = create_upload(stub, project, size=len(data), sha256=hashlib.sha256(b"x").hexdigest())
    error, status = _fails(_write, stub, wrong.upload_name, data)
    assert (error.code(), status.reason) == (grpc.StatusCode.DATA_LOSS, "SHA256_MISMATCH")
    assert _state(stub, wrong.artifact.id) == pb.ARTIFACT_STATE_UPLOADING
    status_now = stub.QueryWriteStatus(
        pb.QueryWriteStatusRequest(resource_name=wrong.upload_name), timeout=TIMEOUT
    )
    assert status_now.committed_size == 0, "reset: write it again from 0"


def test_finish_twice_data_after_finish_and_past_the_declared_size(server: ArtifactServer) -> None:
    stub, project = _user(server)
    created = create_upload(stub, project, size=10)
    error, status = _fails(_write, stub, created.upload_name, b"x" * 11)
    assert (error.code(), status.reason) == (grpc.StatusCode.OUT_OF_RANGE, "SIZE_EXCEEDED")
    error, status = _fails(
        stub.Write,
        iter(
            [
                pb.WriteRequest(
                    resource_name=created.upload_name,
                    write_offset=0,
                    data=b"y" * 10,
                    finish_write=True,
                ),
                pb.WriteRequest(write_offset=10, data=b"z"),
            ]
        ),
        timeout=TIMEOUT,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _state(stub, created.artifact.id) == pb.ARTIFACT_STATE_READY  # the finish stood
    error, status = _fails(_write, stub, created.upload_name, b"y" * 10)
    assert (error.code(), status.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "UPLOAD_COMPLETE")
    out = io.BytesIO()
    download(stub, created.artifact.id, out)
    assert out.getvalue() == b"y" * 10


def test_chunks_above_one_mib_are_refused_and_the_server_goes_on(server: ArtifactServer) -> None:
    stub, project = _user(server)
    created = create_upload(stub, project)
    for size in (1024 * 1024 + 1, 5 * 1024 * 1024):
        request = pb.WriteRequest(resource_name=created.upload_name, data=bytes(size))
        with pytest.raises(grpc.RpcError) as info:
            stub.Write(iter([request]), timeout=TIMEOUT)
        error = info.value
        assert error.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert "data" in rich_status(error).violations
    assert _write(stub, created.upload_name, b"ok") == 2


def test_reads_outside_the_artifact(server: ArtifactServer) -> None:
    stub, project = _user(server)
    created = create_upload(stub, project)
    error, status = _fails(
        lambda: list(
            stub.Read(
                pb.ReadRequest(resource_name=f"artifacts/{created.artifact.id}"), timeout=TIMEOUT
            )
        )
    )
    assert (error.code(), status.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ARTIFACT_NOT_READY",
    )
    _write(stub, created.upload_name, b"0123456789")
    name = f"artifacts/{created.artifact.id}"
    for offset in (-1, 11):
        error, _ = _fails(
            lambda o=offset: list(
                stub.Read(pb.ReadRequest(resource_name=name, read_offset=o), timeout=TIMEOUT)
            )
        )
        assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    error, status = _fails(
        lambda: list(stub.Read(pb.ReadRequest(resource_name=name, read_limit=-1), timeout=TIMEOUT))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "read_limit" in status.violations
    got = b"".join(
        m.data
        for m in stub.Read(pb.ReadRequest(resource_name=name, read_offset=10), timeout=TIMEOUT)
    )
    assert got == b""
    got = b"".join(
        m.data
        for m in stub.Read(
            pb.ReadRequest(resource_name=name, read_offset=3, read_limit=4), timeout=TIMEOUT
        )
    )
    assert got == b"3456"


def test_strangers_see_nothing(server: ArtifactServer) -> None:
    stub, project = _user(server)
    created = create_upload(stub, project)
    stranger, _ = _user(server)
    error, status = _fails(_write, stranger, created.upload_name, b"x")
    assert (error.code(), status.reason) == (grpc.StatusCode.NOT_FOUND, "UPLOAD_NOT_FOUND")
    error, _ = _fails(
        stranger.GetArtifact, pb.GetArtifactRequest(id=created.artifact.id), timeout=TIMEOUT
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error, _ = _fails(create_upload, stranger, project)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error, _ = _fails(
        stranger.ListArtifacts, pb.ListArtifactsRequest(project_id=project), timeout=TIMEOUT
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    unknown = f"uploads/{uuid.uuid4()}"
    error, status = _fails(_write, stub, unknown, b"x")
    assert (error.code(), status.reason) == (grpc.StatusCode.NOT_FOUND, "UPLOAD_NOT_FOUND")
    support = server.stub("support-1", (Role.SUPPORT_ENGINEER,))
    error, _ = _fails(create_upload, support, project)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_names_are_display_names(server: ArtifactServer) -> None:
    stub, project = _user(server)
    for bad in ("x" * 10_000, "a\x00b", "tab\there"):
        error, status = _fails(create_upload, stub, project, name=bad)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "name" in status.violations
    created = create_upload(stub, project, name="../../etc/passwd")
    _write(stub, created.upload_name, b"not a path")
    assert (
        stub.GetArtifact(
            pb.GetArtifactRequest(id=created.artifact.id), timeout=TIMEOUT
        ).artifact.name
        == "../../etc/passwd"
    )
    store = server.objects.resolve()
    assert all(store in p.resolve().parents for p in store.rglob("*"))
    assert not (REPO / "etc" / "passwd").exists()


def test_kind_rules(server: ArtifactServer) -> None:
    stub, project = _user(server)
    cases = [
        pb.CreateUploadRequest(project_id=project, name="d", kind=pb.ARTIFACT_KIND_DATASET),
        pb.CreateUploadRequest(
            project_id=project,
            name="d",
            kind=pb.ARTIFACT_KIND_DOCUMENT,
            format=pb.DATASET_FORMAT_CSV,
        ),
        pb.CreateUploadRequest(
            project_id=project,
            name="d",
            kind=pb.ARTIFACT_KIND_DATASET,
            format=pb.DATASET_FORMAT_CSV,
            work_products=["17-11"],
        ),
        pb.CreateUploadRequest(
            project_id=project, name="d", kind=pb.ARTIFACT_KIND_DOCUMENT, work_products=["SWE.1"]
        ),
        pb.CreateUploadRequest(project_id=project, name="d"),
    ]
    for request in cases:
        error, _ = _fails(stub.CreateUpload, request, timeout=TIMEOUT)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, request


def test_limits(server: ArtifactServer) -> None:
    stub, project = _user(server)
    error, status = _fails(create_upload, stub, project, size=4 * QUOTA + 1)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "size_bytes" in status.violations
    error, status = _fails(create_upload, stub, project, size=QUOTA + 1)
    assert (error.code(), status.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    # An undeclared size meets the quota at a checkpoint (every 5 MiB at least).
    open_ = create_upload(stub, project)
    chunk = b"\0" * (1024 * 1024)
    error, status = _fails(
        stub.Write,
        iter(
            [pb.WriteRequest(resource_name=open_.upload_name, write_offset=0, data=chunk)]
            + [pb.WriteRequest(write_offset=i * len(chunk), data=chunk) for i in range(1, 12)]
        ),
        timeout=TIMEOUT,
    )
    assert (error.code(), status.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    stub.DeleteArtifact(pb.DeleteArtifactRequest(id=open_.artifact.id), timeout=TIMEOUT)
    for _ in range(MAX_OPEN):
        create_upload(stub, project, size=1)
    error, status = _fails(create_upload, stub, project, size=1)
    assert (error.code(), status.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_MANY_OPEN_UPLOADS",
    )


def test_two_streams_on_one_upload_never_interleave(server: ArtifactServer) -> None:
    stub, project = _user(server)
    size = 2 * 1024 * 1024
    created = create_upload(stub, project, size=size)
    sources = [os.urandom(size), os.urandom(size)]
    outcomes: list[object] = [None, None]
    start = threading.Barrier(2)

    def run(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = _write(stub, created.upload_name, sources[index])
        except grpc.RpcError as error:
            outcomes[index] = error.code()

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    winners = [i for i in (0, 1) if outcomes[i] == size]
    assert len(winners) == 1, outcomes
    loser = outcomes[1 - winners[0]]
    assert loser in (
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.FAILED_PRECONDITION,
    ), outcomes
    out = io.BytesIO()
    download(stub, created.artifact.id, out)
    assert out.getvalue() == sources[winners[0]]


def test_delete_and_expiry_leave_no_bytes(server: ArtifactServer, tmp_path: Path) -> None:
    stub, project = _user(server)
    ready = create_upload(stub, project)
    _write(stub, ready.upload_name, b"bytes")
    pending = create_upload(stub, project)
    _write(stub, pending.upload_name, b"half", finish=False)

    def files_of(artifact_id: str) -> list[Path]:
        return [p for p in server.objects.rglob(f"*{artifact_id}*")]

    assert files_of(ready.artifact.id)
    assert files_of(pending.artifact.id)
    for created in (ready, pending):
        stub.DeleteArtifact(pb.DeleteArtifactRequest(id=created.artifact.id), timeout=TIMEOUT)
        assert files_of(created.artifact.id) == []
        error, _ = _fails(
            stub.GetArtifact, pb.GetArtifactRequest(id=created.artifact.id), timeout=TIMEOUT
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
