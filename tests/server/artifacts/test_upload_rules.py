"""The upload rules as a new user runs into them: bad input, limits, concurrency, expiry.

Each case checks the exact gRPC code and ErrorInfo reason (or field violation) the
contract names, and what the artifact looks like afterwards: nothing READY that should not
be, and the upload still usable where the contract says it is. Cases whose outcome depends
on the object store run on both (``target``, ``limited``); see ``conftest.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2 as pb

from tests._identity import Role, auth_env
from tests._processes import run_module
from tests._status import RichStatus, rich_status
from tests._support import wait_for
from tests.server.artifacts._bytestream import (
    CHUNK,
    create_upload,
    data_requests,
    read_pieces,
    write_bytes,
)
from tests.server.artifacts._server import error_metadata
from tests.server.artifacts.conftest import (
    LIMIT_LEASE_SECONDS,
    LIMIT_MAX_BYTES,
    LIMIT_OPEN_UPLOADS,
    LIMIT_QUOTA_BYTES,
    MIB,
    PART_BYTES,
    TIMEOUT,
    ArtifactApi,
    Stub,
    new_subject,
)

DOMAIN = "agentic.artifacts.v1"
LEAD = (Role.TECHNICAL_LEAD,)


def failure(call: Callable[[], object]) -> tuple[RichStatus, dict[str, str]]:
    """Run ``call``, which must fail: its decoded status and its ErrorInfo metadata."""

    def run() -> None:
        result = call()
        if isinstance(result, Iterator):
            list(result)  # a server stream fails when read

    with pytest.raises(grpc.RpcError) as info:
        run()
    decoded = rich_status(info.value)
    assert decoded.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), decoded
    return decoded, error_metadata(info.value)


def get(stub: Stub, artifact_id: str) -> pb.Artifact:
    artifact: pb.Artifact = stub.GetArtifact(
        pb.GetArtifactRequest(id=artifact_id), timeout=TIMEOUT
    ).artifact
    return artifact


def committed(stub: Stub, upload_name: str) -> int:
    status = stub.QueryWriteStatus(
        pb.QueryWriteStatusRequest(resource_name=upload_name), timeout=TIMEOUT
    )
    return int(status.committed_size)


def stream(stub: Stub, requests: list[pb.WriteRequest]) -> int:
    """One Write stream of exactly ``requests``; the committed size it answers."""
    response: pb.WriteResponse = stub.Write(iter(requests), timeout=TIMEOUT)
    return int(response.committed_size)


def content(stub: Stub, artifact_id: str) -> bytes:
    return b"".join(read_pieces(stub, artifact_id))


def lead(api: ArtifactApi) -> tuple[Stub, str, str]:
    """A fresh Technical Lead with a project of their own: (stub, subject, project id)."""
    subject = new_subject("lead")
    return api.stub(subject, LEAD), subject, api.project(owner=subject)


# --- offsets ---------------------------------------------------------------------------------


def _offset_error(status: RichStatus, metadata: dict[str, str], expected: int) -> None:
    assert (status.code, status.reason, status.domain) == (
        grpc.StatusCode.OUT_OF_RANGE,
        "WRITE_OFFSET_MISMATCH",
        DOMAIN,
    )
    assert metadata["expected_offset"] == str(expected), metadata


def test_first_message_must_start_at_the_committed_size(target: ArtifactApi) -> None:
    stub = target.stub()
    data = os.urandom(3000)
    created = create_upload(stub, target.project(), size=len(data))
    name = created.upload_name
    # A new upload starts at 0: a gap is refused.
    status, metadata = failure(lambda: write_bytes(stub, name, data[5:], offset=5))
    _offset_error(status, metadata, 0)
    assert committed(stub, name) == 0
    assert write_bytes(stub, name, data[:1000], finish=False) == 1000
    # Resuming: an overlap and a gap are refused, naming the committed size.
    for wrong in (0, 999, 1001, 2000):
        status, metadata = failure(partial(write_bytes, stub, name, data[wrong:], offset=wrong))
        _offset_error(status, metadata, 1000)
        assert committed(stub, name) == 1000
    assert get(stub, created.artifact.id).state == pb.ARTIFACT_STATE_UPLOADING
    assert write_bytes(stub, name, data[1000:], offset=1000) == len(data)
    assert content(stub, created.artifact.id) == data


@pytest.mark.parametrize("later", [150, 99, 0], ids=["gap", "overlap", "restart"])
def test_later_messages_must_follow_on(target: ArtifactApi, later: int) -> None:
    stub = target.stub()
    data = os.urandom(400)
    created = create_upload(stub, target.project(), size=len(data))
    name = created.upload_name
    requests = [
        pb.WriteRequest(resource_name=name, write_offset=0, data=data[:100]),
        pb.WriteRequest(write_offset=later, data=data[later:], finish_write=True),
    ]
    status, metadata = failure(lambda: stream(stub, requests))
    _offset_error(status, metadata, 100)
    # The bytes before the bad message stay committed; the upload goes on from there.
    assert committed(stub, name) == 100
    assert get(stub, created.artifact.id).state == pb.ARTIFACT_STATE_UPLOADING
    assert write_bytes(stub, name, data[100:], offset=100) == len(data)
    assert content(stub, created.artifact.id) == data


def test_a_stream_ending_without_finish_is_answered_with_the_committed_size(
    target: ArtifactApi,
) -> None:
    stub = target.stub()
    data = os.urandom(2 * CHUNK + 10)
    created = create_upload(stub, target.project())
    name = created.upload_name
    assert write_bytes(stub, name, data[:CHUNK], finish=False) == CHUNK
    assert write_bytes(stub, name, data[CHUNK : CHUNK + 1], offset=CHUNK, finish=False) == CHUNK + 1
    assert committed(stub, name) == CHUNK + 1
    # An empty message at the committed size is a no-op, not an error.
    assert stream(stub, [pb.WriteRequest(resource_name=name, write_offset=CHUNK + 1)]) == CHUNK + 1
    assert get(stub, created.artifact.id).state == pb.ARTIFACT_STATE_UPLOADING
    assert write_bytes(stub, name, data[CHUNK + 1 :], offset=CHUNK + 1) == len(data)
    assert content(stub, created.artifact.id) == data


def test_first_message_must_name_the_upload(file_api: ArtifactApi) -> None:
    stub = file_api.stub()
    status, _ = failure(lambda: stream(stub, [pb.WriteRequest(data=b"x")]))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "resource_name" in status.violations, status.violations
    status, _ = failure(lambda: stream(stub, []))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "resource_name" in status.violations, status.violations


def test_every_message_names_the_same_upload(file_api: ArtifactApi) -> None:
    stub = file_api.stub()
    project = file_api.project()
    first, second = create_upload(stub, project), create_upload(stub, project)
    requests = [
        pb.WriteRequest(resource_name=first.upload_name, data=b"abc"),
        pb.WriteRequest(resource_name=second.upload_name, write_offset=3, data=b"def"),
    ]
    status, _ = failure(lambda: stream(stub, requests))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "resource_name" in status.violations, status.violations
    assert committed(stub, second.upload_name) == 0


# --- finishing -------------------------------------------------------------------------------


def test_a_finished_upload_takes_no_second_stream(target: ArtifactApi) -> None:
    stub = target.stub()
    data = os.urandom(1000)
    created = create_upload(stub, target.project(), size=len(data))
    name = created.upload_name
    assert write_bytes(stub, name, data) == len(data)
    ready = get(stub, created.artifact.id)
    for again in (
        [pb.WriteRequest(resource_name=name, write_offset=len(data), finish_write=True)],
        data_requests(name, data),
        [pb.WriteRequest(resource_name=name, write_offset=len(data), data=b"more")],
    ):
        status, metadata = failure(partial(stream, stub, again))
        assert (status.code, status.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "UPLOAD_COMPLETE",
        )
        assert metadata["artifact_id"] == created.artifact.id
    assert get(stub, created.artifact.id) == ready
    assert content(stub, created.artifact.id) == data
    assert stub.QueryWriteStatus(
        pb.QueryWriteStatusRequest(resource_name=name), timeout=TIMEOUT
    ) == pb.QueryWriteStatusResponse(committed_size=len(data), complete=True)


@pytest.mark.parametrize("extra", [b"after", b""], ids=["data", "second-finish"])
def test_nothing_may_follow_finish_write_in_a_stream(target: ArtifactApi, extra: bytes) -> None:
    stub = target.stub()
    data = os.urandom(500)
    created = create_upload(stub, target.project())
    requests = [
        *data_requests(created.upload_name, data),
        pb.WriteRequest(write_offset=len(data), data=extra, finish_write=not extra),
    ]
    status, _ = failure(lambda: stream(stub, requests))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "finish_write" in status.violations, status.violations
    # The finish stood: READY with exactly the finished bytes.
    artifact = get(stub, created.artifact.id)
    assert artifact.state == pb.ARTIFACT_STATE_READY
    assert (artifact.size_bytes, artifact.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert content(stub, created.artifact.id) == data


def test_a_short_upload_does_not_finish_and_the_rest_can_follow(target: ArtifactApi) -> None:
    stub = target.stub()
    data = os.urandom(CHUNK + 500)
    digest = hashlib.sha256(data).hexdigest()
    created = create_upload(stub, target.project(), size=len(data), sha256=digest)
    name = created.upload_name
    status, metadata = failure(lambda: write_bytes(stub, name, data[:CHUNK]))
    assert (status.code, status.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SIZE_MISMATCH")
    assert metadata == {"committed_size": str(CHUNK), "size_bytes": str(len(data))}
    artifact = get(stub, created.artifact.id)
    assert artifact.state == pb.ARTIFACT_STATE_UPLOADING
    status, _ = failure(lambda: read_pieces(stub, created.artifact.id))
    assert status.reason == "ARTIFACT_NOT_READY"
    assert committed(stub, name) == CHUNK
    assert write_bytes(stub, name, data[CHUNK:], offset=CHUNK) == len(data)
    assert get(stub, created.artifact.id).sha256 == digest
    assert content(stub, created.artifact.id) == data


def test_a_wrong_sha256_resets_the_upload_to_zero(target: ArtifactApi) -> None:
    stub = target.stub()
    data = os.urandom(6 * MIB + 1)  # past a part: S3 holds a part and a tail to discard
    digest = hashlib.sha256(data).hexdigest()
    created = create_upload(stub, target.project(), size=len(data), sha256=digest)
    name = created.upload_name
    wrong = bytearray(data)
    wrong[4 * MIB] ^= 1  # one bit off, in the middle
    status, metadata = failure(lambda: write_bytes(stub, name, bytes(wrong)))
    assert (status.code, status.reason) == (grpc.StatusCode.DATA_LOSS, "SHA256_MISMATCH")
    assert metadata["expected_sha256"] == digest
    assert metadata["actual_sha256"] == hashlib.sha256(wrong).hexdigest()
    assert get(stub, created.artifact.id).state == pb.ARTIFACT_STATE_UPLOADING
    assert committed(stub, name) == 0
    status, metadata = failure(lambda: write_bytes(stub, name, data[10:], offset=10))
    assert metadata["expected_offset"] == "0"
    assert write_bytes(stub, name, data) == len(data)
    artifact = get(stub, created.artifact.id)
    assert (artifact.state, artifact.sha256) == (pb.ARTIFACT_STATE_READY, digest)
    assert content(stub, created.artifact.id) == data


def test_writing_past_the_declared_size_is_refused(target: ArtifactApi) -> None:
    stub = target.stub()
    data = os.urandom(1000)
    created = create_upload(stub, target.project(), size=len(data))
    name = created.upload_name
    status, metadata = failure(lambda: write_bytes(stub, name, data + b"!"))
    assert (status.code, status.reason) == (grpc.StatusCode.OUT_OF_RANGE, "SIZE_EXCEEDED")
    assert metadata["size_bytes"] == str(len(data))
    # Within one stream, the message that would pass it is refused, not the ones before.
    requests = [
        pb.WriteRequest(resource_name=name, write_offset=0, data=data[:600]),
        pb.WriteRequest(write_offset=600, data=data[600:] + b"!!"),
    ]
    status, _ = failure(lambda: stream(stub, requests))
    assert status.reason == "SIZE_EXCEEDED"
    assert committed(stub, name) == 600
    assert write_bytes(stub, name, data[600:], offset=600) == len(data)
    assert content(stub, created.artifact.id) == data


# --- chunk sizes -----------------------------------------------------------------------------


def test_a_chunk_one_byte_over_a_mib_is_a_field_violation(file_api: ArtifactApi) -> None:
    stub = file_api.stub()
    created = create_upload(stub, file_api.project())
    request = pb.WriteRequest(resource_name=created.upload_name, data=bytes(CHUNK + 1))
    status, _ = failure(lambda: stream(stub, [request]))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "data" in status.violations, status.violations
    assert committed(stub, created.upload_name) == 0
    # Exactly 1 MiB is fine.
    assert write_bytes(stub, created.upload_name, bytes(CHUNK)) == CHUNK


def test_a_5_mib_chunk_is_refused_and_the_server_goes_on(file_api: ArtifactApi) -> None:
    stub = file_api.stub()
    created = create_upload(stub, file_api.project())
    request = pb.WriteRequest(resource_name=created.upload_name, data=os.urandom(5 * MIB))
    with pytest.raises(grpc.RpcError) as info:
        stream(stub, [request])
    code = info.value.code()
    # gRPC's own message limit (4 MiB) answers before any code of ours runs.
    assert code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT), code
    assert file_api.service.process.poll() is None
    data = os.urandom(2 * CHUNK)
    assert write_bytes(stub, created.upload_name, data) == len(data)
    assert content(stub, created.artifact.id) == data


# --- who may write what ----------------------------------------------------------------------


def test_unknown_uploads_are_not_found(file_api: ArtifactApi) -> None:
    stub = file_api.stub()
    name = f"uploads/{uuid.uuid4()}"
    for call in (
        lambda: write_bytes(stub, name, b"x"),
        lambda: committed(stub, name),
    ):
        status, metadata = failure(call)
        assert (status.code, status.reason) == (grpc.StatusCode.NOT_FOUND, "UPLOAD_NOT_FOUND")
        assert metadata["resource_name"] == name
    # An artifact id is not an upload name.
    created = create_upload(stub, file_api.project())
    status, _ = failure(lambda: write_bytes(stub, f"uploads/{created.artifact.id}", b"x"))
    assert status.reason == "UPLOAD_NOT_FOUND"
    for bad in ("uploads/../../etc", "artifacts/" + str(uuid.uuid4()), "uploads/" + "a" * 36):
        status, _ = failure(partial(write_bytes, stub, bad, b"x"))
        assert status.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), bad


def test_another_principals_upload_is_not_found_even_in_a_shared_project(
    file_api: ArtifactApi,
) -> None:
    owner, colleague = new_subject("owner"), new_subject("colleague")
    project = file_api.project(owner=owner, members=(colleague,))
    mine = file_api.stub(owner, LEAD)
    theirs = file_api.stub(colleague, LEAD)
    created = create_upload(mine, project, size=10)
    write_bytes(mine, created.upload_name, b"01234", finish=False)
    for call in (
        lambda: write_bytes(theirs, created.upload_name, b"56789", offset=5),
        lambda: committed(theirs, created.upload_name),
    ):
        status, _ = failure(call)
        assert (status.code, status.reason) == (grpc.StatusCode.NOT_FOUND, "UPLOAD_NOT_FOUND")
    # The colleague reaches the artifact itself (the project is shared), not the upload.
    assert get(theirs, created.artifact.id).state == pb.ARTIFACT_STATE_UPLOADING
    assert committed(mine, created.upload_name) == 5
    assert write_bytes(mine, created.upload_name, b"56789", offset=5) == 10
    assert content(theirs, created.artifact.id) == b"0123456789"


def test_projects_out_of_reach_are_not_found(file_api: ArtifactApi) -> None:
    stub, _, project = lead(file_api)
    created = create_upload(stub, project)
    write_bytes(stub, created.upload_name, b"secret")
    stranger = file_api.stub(new_subject("stranger"), LEAD)
    for target_project in (project, str(uuid.uuid4())):
        status, _ = failure(partial(create_upload, stranger, target_project))
        assert (status.code, status.reason) == (grpc.StatusCode.NOT_FOUND, "PROJECT_NOT_FOUND")
        status, _ = failure(
            partial(
                stranger.ListArtifacts,
                pb.ListArtifactsRequest(project_id=target_project),
                timeout=TIMEOUT,
            )
        )
        assert (status.code, status.reason) == (grpc.StatusCode.NOT_FOUND, "PROJECT_NOT_FOUND")
    # The stranger's answers for a real artifact equal those for a missing one.
    for artifact_id in (created.artifact.id, str(uuid.uuid4())):
        for call in (
            lambda a=artifact_id: get(stranger, a),
            lambda a=artifact_id: read_pieces(stranger, a),
        ):
            status, metadata = failure(call)
            assert (status.code, status.reason) == (grpc.StatusCode.NOT_FOUND, "ARTIFACT_NOT_FOUND")
            assert metadata == {"id": artifact_id}


def test_a_support_engineer_reads_but_does_not_write(file_api: ArtifactApi) -> None:
    support = new_subject("support")
    project = file_api.project(members=(support,))
    admin = file_api.stub()
    created = create_upload(admin, project)
    write_bytes(admin, created.upload_name, b"report")
    pending = create_upload(admin, project)
    reader = file_api.stub(support, (Role.SUPPORT_ENGINEER,))
    assert get(reader, created.artifact.id).state == pb.ARTIFACT_STATE_READY
    assert content(reader, created.artifact.id) == b"report"
    listed = reader.ListArtifacts(pb.ListArtifactsRequest(project_id=project), timeout=TIMEOUT)
    assert {a.id for a in listed.artifacts} == {created.artifact.id, pending.artifact.id}
    for call in (
        lambda: create_upload(reader, project),
        lambda: write_bytes(reader, pending.upload_name, b"x"),
        lambda: committed(reader, pending.upload_name),
        lambda: reader.DeleteArtifact(
            pb.DeleteArtifactRequest(id=created.artifact.id), timeout=TIMEOUT
        ),
    ):
        status, _ = failure(call)
        assert status.code == grpc.StatusCode.PERMISSION_DENIED
    assert committed(admin, pending.upload_name) == 0


# --- names, kinds, formats -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "x" * 10_000,
        "x" * 201,
        "",
        "nul\x00byte",
        "new\nline",
        "tab\t",
        "esc\x1b[31m",
        "del\x7f",
        "c1\x85",
    ],
    ids=["10kb", "201", "empty", "nul", "newline", "tab", "escape", "del", "c1"],
)
def test_bad_names_are_field_violations(file_api: ArtifactApi, name: str) -> None:
    stub = file_api.stub()
    project = file_api.project()
    status, _ = failure(lambda: create_upload(stub, project, name=name))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in status.violations, status.violations
    listed = stub.ListArtifacts(pb.ListArtifactsRequest(project_id=project), timeout=TIMEOUT)
    assert list(listed.artifacts) == []


PATH_NAMES = ("../../etc/passwd", "/etc/passwd", "..", "a/../../b", "C:\\Windows\\x", "~/.ssh/id")


def _path_state(path: Path) -> tuple[bool, int, int]:
    """Whether ``path`` exists and, for a file, its size and modification time (to see it
    untouched; a directory such as ``..`` changes as the store adds its own entries)."""
    try:
        found = path.stat()
    except OSError:
        return False, 0, 0
    if path.is_dir():
        return True, 0, 0
    return True, found.st_size, found.st_mtime_ns


def test_a_path_as_name_is_only_a_name(target: ArtifactApi) -> None:
    stub = target.stub()
    before = target.stray_files()
    # Where each name would lead if the file store used it as a path (some exist: /etc/passwd).
    bases = () if target.root is None else (target.root, target.root / ".staging")
    leads = [base / name for base in bases for name in PATH_NAMES]
    untouched = {path: _path_state(path) for path in leads}
    for name in PATH_NAMES:
        created = create_upload(stub, target.project(), name=name)
        write_bytes(stub, created.upload_name, name.encode())
        artifact = get(stub, created.artifact.id)
        assert (artifact.name, artifact.state) == (name, pb.ARTIFACT_STATE_READY)
        assert content(stub, artifact.id) == name.encode()
        # Stored under a key of ids only.
        assert target.traces(artifact.id)
        assert all("etc" not in trace and ".." not in trace for trace in target.traces(artifact.id))
    assert {path: _path_state(path) for path in leads} == untouched
    assert target.stray_files() == before, "a file outside the store's own tree appeared"


def _request(project: str, **fields: object) -> pb.CreateUploadRequest:
    base: dict[str, object] = {
        "project_id": project,
        "name": "n",
        "kind": pb.ARTIFACT_KIND_DATASET,
        "format": pb.DATASET_FORMAT_CSV,
    }
    base.update(fields)
    return pb.CreateUploadRequest(**base)  # type: ignore[arg-type]  # the request's fields


@pytest.mark.parametrize(
    ("fields", "violation"),
    [
        ({"format": pb.DATASET_FORMAT_UNSPECIFIED}, "format.datasets_only"),
        ({"kind": pb.ARTIFACT_KIND_DOCUMENT}, "format.datasets_only"),
        ({"work_products": ["17-11"]}, "work_products.documents_only"),
        ({"kind": pb.ARTIFACT_KIND_UNSPECIFIED, "format": 0}, "kind"),
        ({"kind": 7}, "kind"),
        ({"format": 9}, "format"),
        (
            {"kind": pb.ARTIFACT_KIND_DOCUMENT, "format": 0, "work_products": ["17-1"]},
            "work_products[0]",
        ),
        (
            {"kind": pb.ARTIFACT_KIND_DOCUMENT, "format": 0, "work_products": ["SWE.1"]},
            "work_products[0]",
        ),
        (
            {"kind": pb.ARTIFACT_KIND_DOCUMENT, "format": 0, "work_products": ["17-11", "17-11"]},
            "work_products",
        ),
        (
            {
                "kind": pb.ARTIFACT_KIND_DOCUMENT,
                "format": 0,
                "work_products": [f"{i:02d}-01" for i in range(51)],
            },
            "work_products",
        ),
        ({"sha256": "A" * 64}, "sha256"),
        ({"sha256": "0" * 63}, "sha256"),
        ({"size_bytes": -1}, "size_bytes"),
        ({"content_type": "not a type"}, "content_type"),
        ({"content_type": "text/" + "x" * 300}, "content_type"),
        ({"project_id": "not-a-uuid"}, "project_id"),
    ],
    ids=[
        "dataset-without-format",
        "document-with-format",
        "work-products-on-dataset",
        "no-kind",
        "unknown-kind",
        "unknown-format",
        "short-work-product",
        "process-id-as-work-product",
        "duplicate-work-products",
        "51-work-products",
        "upper-case-sha256",
        "short-sha256",
        "negative-size",
        "bad-content-type",
        "long-content-type",
        "bad-project-id",
    ],
)
def test_kind_format_and_field_rules(
    file_api: ArtifactApi, fields: dict[str, object], violation: str
) -> None:
    stub = file_api.stub()
    project = file_api.project()
    status, _ = failure(lambda: stub.CreateUpload(_request(project, **fields), timeout=TIMEOUT))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    found = set(status.violations) | set(status.violation_reasons.values())
    assert violation in found, (status.violations, status.violation_reasons)


def test_documents_and_datasets_that_keep_the_rules_are_accepted(file_api: ArtifactApi) -> None:
    stub = file_api.stub()
    project = file_api.project()
    for fields in (
        {"kind": pb.ARTIFACT_KIND_DOCUMENT, "format": 0, "work_products": ["17-11", "04-04"]},
        {"kind": pb.ARTIFACT_KIND_DOCUMENT, "format": 0},
        {"format": pb.DATASET_FORMAT_JSONL, "content_type": "application/x-ndjson; charset=utf-8"},
        {
            "format": pb.DATASET_FORMAT_PARQUET,
            "size_bytes": 0,
            "sha256": hashlib.sha256(b"").hexdigest(),
        },
    ):
        created = stub.CreateUpload(_request(project, **fields), timeout=TIMEOUT)
        assert created.artifact.state == pb.ARTIFACT_STATE_UPLOADING


# --- limits (the ``limited`` servers) ---------------------------------------------------------


def test_declared_size_above_the_maximum_is_invalid(limited: ArtifactApi) -> None:
    stub, _, project = lead(limited)
    status, _ = failure(lambda: create_upload(stub, project, size=LIMIT_MAX_BYTES + 1))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "size_bytes" in status.violations, status.violations
    # The maximum itself is a size the quota decides on.
    status, _ = failure(lambda: create_upload(stub, project, size=LIMIT_MAX_BYTES))
    assert (status.code, status.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")


def test_quota_at_create_upload_counts_ready_and_open_uploads(limited: ArtifactApi) -> None:
    stub, _, project = lead(limited)
    status, _ = failure(lambda: create_upload(stub, project, size=LIMIT_QUOTA_BYTES + 1))
    assert (status.code, status.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    ready = create_upload(stub, project, size=3 * MIB)
    write_bytes(stub, ready.upload_name, bytes(3 * MIB))
    create_upload(stub, project, size=3 * MIB)  # open: its declared size counts
    status, _ = failure(lambda: create_upload(stub, project, size=LIMIT_QUOTA_BYTES - 6 * MIB + 1))
    assert (status.code, status.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    exactly = create_upload(stub, project, size=LIMIT_QUOTA_BYTES - 6 * MIB)
    assert exactly.artifact.state == pb.ARTIFACT_STATE_UPLOADING
    # Another project has its own quota.
    other = limited.project(owner=new_subject("other"))
    assert create_upload(limited.stub(), other, size=LIMIT_QUOTA_BYTES).artifact.id
    # Deleting gives the bytes back.
    stub.DeleteArtifact(pb.DeleteArtifactRequest(id=ready.artifact.id), timeout=TIMEOUT)
    assert create_upload(stub, project, size=3 * MIB).artifact.id


def _undeclared_stream(name: str, total: int) -> Iterator[pb.WriteRequest]:
    for index in range(total // CHUNK):
        yield pb.WriteRequest(
            resource_name=name if index == 0 else "",
            write_offset=index * CHUNK,
            data=bytes(CHUNK),
            finish_write=index == total // CHUNK - 1,
        )


@pytest.mark.parametrize(
    "total",
    [LIMIT_QUOTA_BYTES + MIB, 2 * PART_BYTES + MIB],
    ids=["finish-between-checkpoints", "past-two-checkpoints"],
)
def test_quota_during_write_of_an_undeclared_size(limited: ArtifactApi, total: int) -> None:
    stub, _, project = lead(limited)
    created = create_upload(stub, project)  # no size: only the bytes tell
    status, _ = failure(
        lambda: stub.Write(_undeclared_stream(created.upload_name, total), timeout=TIMEOUT)
    )
    assert (status.code, status.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    artifact = get(stub, created.artifact.id)
    assert artifact.state == pb.ARTIFACT_STATE_UPLOADING, "over the quota, nothing may be READY"
    assert committed(stub, created.upload_name) <= LIMIT_QUOTA_BYTES
    # Within the quota the same upload finishes.
    done = committed(stub, created.upload_name)
    rest = LIMIT_QUOTA_BYTES - done
    assert write_bytes(stub, created.upload_name, bytes(rest), offset=done) == LIMIT_QUOTA_BYTES
    assert get(stub, created.artifact.id).size_bytes == LIMIT_QUOTA_BYTES


def test_too_many_open_uploads(limited: ArtifactApi) -> None:
    stub, subject, project = lead(limited)
    opened = [create_upload(stub, project, size=1) for _ in range(LIMIT_OPEN_UPLOADS)]
    status, _ = failure(lambda: create_upload(stub, project, size=1))
    assert (status.code, status.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "TOO_MANY_OPEN_UPLOADS",
    )
    # Counted per principal: a colleague in the same project may still upload.
    colleague = new_subject("colleague")
    shared = limited.project(owner=subject, members=(colleague,))
    assert create_upload(limited.stub(colleague, LEAD), shared, size=1).artifact.id
    # Finishing one, or deleting one, frees a place.
    write_bytes(stub, opened[0].upload_name, b"x")
    create_upload(stub, project, size=1)
    failure(lambda: create_upload(stub, project, size=1))
    stub.DeleteArtifact(pb.DeleteArtifactRequest(id=opened[1].artifact.id), timeout=TIMEOUT)
    create_upload(stub, project, size=1)


def _at_once(attempts: Sequence[Callable[[], object]]) -> list[str]:
    """Run every attempt in a thread of its own, released together: the reason of each
    failure, "created" for each success."""
    start = threading.Barrier(len(attempts), timeout=TIMEOUT)

    def run(attempt: Callable[[], object]) -> str:
        start.wait()
        try:
            attempt()
        except grpc.RpcError as error:
            return rich_status(error).reason
        return "created"

    with ThreadPoolExecutor(len(attempts)) as pool:
        return list(pool.map(run, attempts))


def test_simultaneous_creates_keep_the_limits(limited_database: ArtifactApi) -> None:
    api = limited_database
    # One principal's open uploads, created at once in two projects of theirs: the limit
    # is the principal's, whichever project each create names.
    stub, subject, project = lead(api)
    other = api.project(owner=subject)
    creates = [partial(create_upload, stub, (project, other)[i % 2], size=1) for i in range(8)]
    outcomes = _at_once(creates)
    assert outcomes.count("created") == LIMIT_OPEN_UPLOADS, (api.name, outcomes)
    assert set(outcomes) == {"created", "TOO_MANY_OPEN_UPLOADS"}, (api.name, outcomes)
    # One project's quota, filled at once by members each far from their own limit.
    owner = new_subject("lead")
    members = tuple(new_subject("member") for _ in range(8))
    shared = api.project(owner=owner, members=members)
    creates = [
        partial(create_upload, api.stub(member, LEAD), shared, size=3 * MIB) for member in members
    ]
    outcomes = _at_once(creates)
    assert outcomes.count("created") == LIMIT_QUOTA_BYTES // (3 * MIB), (api.name, outcomes)
    assert set(outcomes) == {"created", "QUOTA_EXCEEDED"}, (api.name, outcomes)


# --- two streams on one upload ---------------------------------------------------------------


def test_two_concurrent_streams_never_interleave(limited: ArtifactApi) -> None:
    stub, _, project = lead(limited)
    size = 3 * CHUNK
    created = create_upload(stub, project, size=size)
    sources = [os.urandom(size), os.urandom(size)]
    done = [threading.Event(), threading.Event()]
    start = threading.Barrier(2, timeout=TIMEOUT)
    outcomes: list[object] = [None, None]

    def requests(index: int) -> Iterator[pb.WriteRequest]:
        messages = data_requests(created.upload_name, sources[index])
        start.wait()
        yield messages[0]
        # Hold on until the other stream was answered: whichever stream took the upload
        # keeps it while the other one tries. Bounded: if both took it (a bug), they go on
        # and write their bytes into one upload, which the check below catches.
        done[1 - index].wait(5)
        yield from messages[1:]

    def run(index: int) -> None:
        try:
            outcomes[index] = stub.Write(requests(index), timeout=TIMEOUT).committed_size
        except grpc.RpcError as error:
            outcomes[index] = rich_status(error)
        finally:
            done[index].set()

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    winners = [i for i in (0, 1) if outcomes[i] == size]
    assert len(winners) == 1, outcomes
    loser = outcomes[1 - winners[0]]
    assert isinstance(loser, RichStatus), outcomes
    assert (loser.code, loser.reason) in {
        (grpc.StatusCode.ABORTED, "UPLOAD_BUSY"),
        (grpc.StatusCode.OUT_OF_RANGE, "WRITE_OFFSET_MISMATCH"),
        (grpc.StatusCode.FAILED_PRECONDITION, "UPLOAD_COMPLETE"),
    }, loser
    artifact = get(stub, created.artifact.id)
    assert artifact.sha256 == hashlib.sha256(sources[winners[0]]).hexdigest()
    assert content(stub, created.artifact.id) == sources[winners[0]]


def test_a_second_stream_is_busy_while_the_first_holds_the_upload(limited: ArtifactApi) -> None:
    stub, _, project = lead(limited)
    data = os.urandom(2 * CHUNK)
    created = create_upload(stub, project, size=len(data))
    name = created.upload_name
    first_sent, busy_seen = threading.Event(), threading.Event()

    def holding() -> Iterator[pb.WriteRequest]:
        messages = data_requests(name, data)
        yield messages[0]
        first_sent.set()
        busy_seen.wait(TIMEOUT)
        yield from messages[1:]

    call = stub.Write.future(holding(), timeout=TIMEOUT)
    try:
        assert first_sent.wait(TIMEOUT)
        wait_for(lambda: limited.writer_holds(name), timeout=10, message="the first claim")
        probe = [pb.WriteRequest(resource_name=name, write_offset=0)]
        status, metadata = failure(lambda: stream(stub, probe))
        assert (status.code, status.reason) == (grpc.StatusCode.ABORTED, "UPLOAD_BUSY"), status
        assert metadata["resource_name"] == name
    finally:
        busy_seen.set()
    assert call.result(TIMEOUT).committed_size == len(data)
    assert content(stub, created.artifact.id) == data


# --- expiry ----------------------------------------------------------------------------------


def _expire(api: ArtifactApi, now: str) -> dict[str, int]:
    env = {**os.environ, **auth_env(), **api.env}
    done = run_module("server.artifacts", "expire", "--now", now, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_expired_uploads_fail_and_leave_no_bytes(limited: ArtifactApi) -> None:
    stub, _, project = lead(limited)
    old = create_upload(stub, project, size=6 * MIB)
    data = os.urandom(PART_BYTES + 123)  # a part and a tail on S3; a staged file on disk
    assert write_bytes(stub, old.upload_name, data, finish=False) == len(data)
    young = create_upload(stub, project, size=10)
    write_bytes(stub, young.upload_name, b"young", finish=False)
    ready = create_upload(stub, project, size=5)
    write_bytes(stub, ready.upload_name, b"ready")
    assert limited.traces(old.artifact.id)
    expire_old = old.artifact.expire_time.ToDatetime()
    expire_young = young.artifact.expire_time.ToDatetime()
    assert expire_old < expire_young
    between = expire_old + (expire_young - expire_old) / 2
    assert between > expire_old

    now = between.isoformat() + "+00:00"
    report = _expire(limited, now)
    assert report["expired_uploads"] >= 1
    assert report["failures"] == 0
    assert _expire(limited, now) == {"expired_uploads": 0, "finished_deletions": 0, "failures": 0}

    failed = get(stub, old.artifact.id)
    assert failed.state == pb.ARTIFACT_STATE_FAILED
    assert "expired" in failed.failure_reason
    assert not failed.HasField("expire_time")
    assert limited.traces(old.artifact.id) == [], "an expired upload's bytes must go"
    status, metadata = failure(
        lambda: write_bytes(stub, old.upload_name, data[:10], offset=len(data))
    )
    assert (status.code, status.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "UPLOAD_FAILED")
    assert metadata["artifact_id"] == old.artifact.id
    status, _ = failure(lambda: read_pieces(stub, old.artifact.id))
    assert (status.code, status.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ARTIFACT_NOT_READY",
    )
    failed_list = stub.ListArtifacts(
        pb.ListArtifactsRequest(project_id=project, state=pb.ARTIFACT_STATE_FAILED), timeout=TIMEOUT
    )
    assert [a.id for a in failed_list.artifacts] == [old.artifact.id]

    # Not yet due, and finished: untouched.
    assert get(stub, young.artifact.id).state == pb.ARTIFACT_STATE_UPLOADING
    assert write_bytes(stub, young.upload_name, b"ster", offset=5, finish=False) == 9
    assert content(stub, ready.artifact.id) == b"ready"
    # A failed upload no longer counts as open, and its bytes no longer count to the quota.
    assert create_upload(stub, project, size=LIMIT_QUOTA_BYTES - 5 - 10).artifact.id
    # Deleting a failed artifact works and leaves nothing.
    stub.DeleteArtifact(pb.DeleteArtifactRequest(id=old.artifact.id), timeout=TIMEOUT)
    status, _ = failure(lambda: get(stub, old.artifact.id))
    assert status.code == grpc.StatusCode.NOT_FOUND


# (first write, what the stalled stream does when it wakes up): more data, a finish, or
# just its end. The small first writes stay in the file store writer's buffer.
# 100 bytes: below a buffered file's buffer (io.DEFAULT_BUFFER_SIZE), the case a buffered
# writer would flush late.
LATE_CASES = [(CHUNK, "data"), (CHUNK, "finish"), (100, "data"), (100, "end")]


def _stalled_then_taken_over(
    api: ArtifactApi, stub: Stub, project: str, first: int, late: str
) -> str:
    """Run one case; "" when the bytes are the taking-over stream's, else what went wrong."""
    size = 3 * CHUNK
    created = create_upload(stub, project)  # undeclared: a late finish gets to the store
    name = created.upload_name
    stalled_source, resumed_source = os.urandom(size), os.urandom(size)
    first_sent, wake = threading.Event(), threading.Event()

    def stalled() -> Iterator[pb.WriteRequest]:
        yield pb.WriteRequest(resource_name=name, data=stalled_source[:first])
        first_sent.set()
        wake.wait(TIMEOUT)
        if late == "data":
            yield from data_requests(name, stalled_source[first:], offset=first)[:1]
        elif late == "finish":
            yield pb.WriteRequest(write_offset=first, finish_write=True)

    call = stub.Write.future(stalled(), timeout=TIMEOUT)
    try:
        assert first_sent.wait(TIMEOUT)
        wait_for(lambda: api.writer_holds(name), timeout=10, message="the first claim")

        def take_over() -> bool:
            try:
                write_bytes(stub, name, resumed_source)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.ABORTED:
                    raise
                return False
            return True

        wait_for(take_over, timeout=4 * LIMIT_LEASE_SECONDS, message="the lease to lapse")
        finished = get(stub, created.artifact.id)
        assert finished.sha256 == hashlib.sha256(resumed_source).hexdigest()
    finally:
        wake.set()
    try:
        call.result(TIMEOUT)
    except grpc.RpcError as error:
        status = rich_status(error)
        assert (status.code, status.reason) == (grpc.StatusCode.ABORTED, "UPLOAD_BUSY"), status
    wait_for(lambda: not api.writer_holds(name), timeout=10, message="the late stream's end")
    if get(stub, created.artifact.id) != finished:
        return "the artifact changed"
    if content(stub, created.artifact.id) != resumed_source:
        return "the late stream changed the finished bytes"
    return ""


def test_a_stream_that_lost_its_lease_cannot_change_the_bytes(limited: ArtifactApi) -> None:
    # A stream that goes quiet for longer than the writer lease (a stalled client, a
    # partitioned network) loses the upload to a resuming stream; whatever it does when it
    # wakes up, it must not reach the bytes the other stream finished. The cases run side
    # by side (each on its own upload): each waits out a lease. Each case is a lead of its
    # own with a project of its own: four uploads at once are more than one principal may
    # hold open (LIMIT_OPEN_UPLOADS), and each case fills a project's quota.
    leads = {case: lead(limited) for case in LATE_CASES}
    with ThreadPoolExecutor(len(LATE_CASES)) as pool:
        runs = {
            case: pool.submit(_stalled_then_taken_over, limited, stub, project, *case)
            for case, (stub, _, project) in leads.items()
        }
        outcomes = {case: run.result(timeout=3 * TIMEOUT) for case, run in runs.items()}
    wrong = {case: outcome for case, outcome in outcomes.items() if outcome}
    assert not wrong, wrong
