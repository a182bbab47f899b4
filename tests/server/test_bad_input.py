"""Bad client input gets a defined status, never INTERNAL or UNKNOWN (issue #9).

Each case here was once answered with an undefined code: NUL bytes reached PostgreSQL
(INTERNAL), mask sub-paths reached ``getattr`` (INTERNAL), undecodable bytes made grpc.aio
echo the parser's exception (UNKNOWN), a string ``roles`` claim passed as "no roles"
(PERMISSION_DENIED). Undecodable bytes are tried on every RPC shape: unary, server stream
(WatchTask, ByteStream Read) and client stream (ByteStream Write, first or later message).
Real server processes, on SQLite and PostgreSQL (the ``api`` fixture).
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2, artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as pb
from agentic.tasks.v1 import tasks_pb2
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2
from sqlalchemy import text

from core.rpc import UNDECODABLE_MESSAGE
from tests._identity import Role, authorized_channel, bearer, dev_keys
from tests._status import rich_status
from tests.conftest import Api

TIMEOUT = 10.0


def snapshot(api: Api) -> list[tuple[Any, ...]]:
    """Every project row and membership, straight from the database (plain SQL: the test
    checks what is stored, whichever module maps it)."""
    with api.engine.connect() as conn:
        projects = conn.execute(text("SELECT * FROM projects ORDER BY id"))
        members = conn.execute(text("SELECT * FROM project_members ORDER BY 1, 2"))
        return [tuple(r) for r in [*projects, *members]]


def refused(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """Code, ErrorInfo.reason and field violations (field -> reason) of a failed call."""
    decoded = rich_status(error)
    return decoded.code, decoded.reason, decoded.violation_reasons


def create(api: Api, description: str = "") -> pb.Project:
    """A fresh project owned by alice."""
    request = pb.CreateProjectRequest(
        project=pb.Project(
            name=f"p-{uuid.uuid4().hex[:8]}", owner_id="alice", description=description
        )
    )
    project: pb.Project = api.projects.CreateProject(request, timeout=TIMEOUT).project
    return project


# --- NUL and other control characters ------------------------------------------------------

NAME_RULE = "name.no_control_characters"
DESCRIPTION_RULE = "description.no_control_characters"


@pytest.mark.parametrize(
    ("name", "description", "field", "rule"),
    [
        ("nul\x00name", "", "project.name", NAME_RULE),
        ("tab\tname", "", "project.name", NAME_RULE),
        ("c1\x85name", "", "project.name", NAME_RULE),
        ("ok", "nul\x00description", "project.description", DESCRIPTION_RULE),
        ("ok", "bell\x07", "project.description", DESCRIPTION_RULE),
        ("ok", "del\x7f", "project.description", DESCRIPTION_RULE),
    ],
    ids=["nul-name", "tab-name", "c1-name", "nul-description", "bel-description", "del-desc"],
)
def test_control_characters_on_create_are_refused(
    api: Api, name: str, description: str, field: str, rule: str
) -> None:
    before = snapshot(api)
    request = pb.CreateProjectRequest(
        project=pb.Project(name=name, description=description, owner_id="alice")
    )
    with pytest.raises(grpc.RpcError) as info:
        api.projects.CreateProject(request, timeout=TIMEOUT)
    code, reason, violations = refused(info.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert violations == {field: rule}
    assert snapshot(api) == before


@pytest.mark.parametrize(
    ("path", "project", "field"),
    [
        ("name", pb.Project(name="nul\x00name"), "project.name"),
        ("description", pb.Project(description="nul\x00description"), "project.description"),
    ],
    ids=["nul-name", "nul-description"],
)
def test_nul_on_update_is_refused_and_changes_nothing(
    api: Api, path: str, project: pb.Project, field: str
) -> None:
    target = create(api)
    before = snapshot(api)
    request = pb.UpdateProjectRequest(
        id=target.id, project=project, update_mask=field_mask_pb2.FieldMask(paths=[path])
    )
    with pytest.raises(grpc.RpcError) as info:
        api.projects.UpdateProject(request, timeout=TIMEOUT)
    code, _, violations = refused(info.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations, violations
    assert snapshot(api) == before


def test_description_keeps_tab_newline_and_carriage_return(api: Api) -> None:
    text = "line one\r\nline two\tindented"
    created = create(api, description=text)
    got = api.projects.GetProject(pb.GetProjectRequest(id=created.id), timeout=TIMEOUT)
    assert got.project.description == text


# --- update_mask paths ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["name.first", "name.", "description.x", "member_ids.z"])
def test_mask_sub_paths_are_refused_and_change_nothing(api: Api, path: str) -> None:
    target = create(api)
    before = snapshot(api)
    request = pb.UpdateProjectRequest(
        id=target.id,
        project=pb.Project(name="renamed", description="changed", member_ids=["bob"]),
        update_mask=field_mask_pb2.FieldMask(paths=[path]),
    )
    with pytest.raises(grpc.RpcError) as info:
        api.projects.UpdateProject(request, timeout=TIMEOUT)
    code, _, violations = refused(info.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask.paths" in violations, violations
    assert snapshot(api) == before


def test_unknown_mask_path_is_a_violation_on_paths(api: Api) -> None:
    target = create(api)
    request = pb.UpdateProjectRequest(
        id=target.id,
        project=pb.Project(name="renamed"),
        update_mask=field_mask_pb2.FieldMask(paths=["name", "no_such_field"]),
    )
    with pytest.raises(grpc.RpcError) as info:
        api.projects.UpdateProject(request, timeout=TIMEOUT)
    code, _, violations = refused(info.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask.paths" in violations, violations


# --- bytes that are not the request message ------------------------------------------------

# Nesting far beyond any protobuf parser's recursion limit (100 in upb and the pure Python
# runtime), as balanced start/end group tags of an unknown field 15, so that only the
# depth is wrong.
DEEP_GROUPS = b"\x7b" * 5000 + b"\x7c" * 5000

UNDECODABLE_BYTES = {
    "bad-tag-field-zero": b"\x00\x01",
    "bad-wire-type": b"\x0f\x01",
    # project (field 1) claims 10 bytes and brings 4.
    "truncated": b"\x0a\x0a\x12\x02ab",
    # project.name (field 2) is not UTF-8.
    "invalid-utf8": b"\x0a\x04\x12\x02\xff\xfe",
    "deep-groups": DEEP_GROUPS,
}


def _assert_clean_invalid_argument(error: grpc.RpcError) -> None:
    code, reason, _ = refused(error)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_REQUEST")
    message = error.details() or ""
    assert message == UNDECODABLE_MESSAGE
    for leak in ("DecodeError", "Unexpected", "<class", "Traceback", "Error parsing"):
        assert leak not in message


def _raw_unary(api: Api, method: str, data: bytes) -> bytes:
    call = api.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    reply: bytes = call(data, timeout=TIMEOUT)
    return reply


@pytest.mark.parametrize("data", UNDECODABLE_BYTES.values(), ids=UNDECODABLE_BYTES.keys())
@pytest.mark.parametrize(
    "method",
    [
        "/agentic.projects.v1.ProjectService/CreateProject",
        "/agentic.projects.v1.ProjectService/UpdateProject",
        "/agentic.tasks.v1.TaskService/SubmitProbe",
        "/agentic.artifacts.v1.ArtifactService/CreateUpload",
        "/agentic.artifacts.v1.ArtifactService/UpdateArtifact",
    ],
)
def test_undecodable_unary_request_is_invalid_argument(api: Api, method: str, data: bytes) -> None:
    before = snapshot(api)
    with pytest.raises(grpc.RpcError) as info:
        _raw_unary(api, method, data)
    _assert_clean_invalid_argument(info.value)
    assert snapshot(api) == before


@pytest.mark.parametrize("data", UNDECODABLE_BYTES.values(), ids=UNDECODABLE_BYTES.keys())
def test_undecodable_watch_request_is_invalid_argument(api: Api, data: bytes) -> None:
    call = api.channel.unary_stream(
        "/agentic.tasks.v1.TaskService/WatchTask",
        request_serializer=None,
        response_deserializer=None,
    )
    stream = call(data, timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as info:
        next(iter(stream))
    _assert_clean_invalid_argument(info.value)


@pytest.mark.parametrize("data", UNDECODABLE_BYTES.values(), ids=UNDECODABLE_BYTES.keys())
def test_undecodable_read_request_is_invalid_argument(api: Api, data: bytes) -> None:
    call = api.channel.unary_stream(
        "/agentic.artifacts.v1.ArtifactService/Read",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.RpcError) as info:
        next(iter(call(data, timeout=TIMEOUT)))
    _assert_clean_invalid_argument(info.value)


def _open_upload(api: Api) -> str:
    """The upload name of a new, empty upload in a new project, created by an Administrator
    of its own (open uploads count against a per-principal limit: the suite's
    Administrator's may be used up by other tests)."""
    with authorized_channel(
        api.service.address, f"bad-input-{uuid.uuid4().hex[:8]}", (Role.ADMINISTRATOR,)
    ) as channel:
        created = artifacts_pb2_grpc.ArtifactServiceStub(channel).CreateUpload(
            artifacts_pb2.CreateUploadRequest(
                project_id=create(api).id,
                name="bad-input.csv",
                kind=artifacts_pb2.ARTIFACT_KIND_DATASET,
                format=artifacts_pb2.DATASET_FORMAT_CSV,
            ),
            timeout=TIMEOUT,
        )
    return str(created.upload_name)


@pytest.mark.parametrize("data", UNDECODABLE_BYTES.values(), ids=UNDECODABLE_BYTES.keys())
@pytest.mark.parametrize("position", ["first", "later"])
def test_undecodable_write_message_is_invalid_argument(
    api: Api, data: bytes, position: str
) -> None:
    # A client stream: the bad message may come first or after good ones; either way the
    # stream ends with the same clean answer, and the good bytes before it stay committed.
    name = _open_upload(api)
    good = artifacts_pb2.WriteRequest(resource_name=name, data=b"abc").SerializeToString()
    messages = [data] if position == "first" else [good, data]
    call = api.channel.stream_unary(
        "/agentic.artifacts.v1.ArtifactService/Write",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.RpcError) as info:
        call(iter(messages), timeout=TIMEOUT)
    _assert_clean_invalid_argument(info.value)
    status = artifacts_pb2_grpc.ArtifactServiceStub(api.channel).QueryWriteStatus(
        artifacts_pb2.QueryWriteStatusRequest(resource_name=name), timeout=TIMEOUT
    )
    assert status.committed_size == (0 if position == "first" else 3)


def test_undecodable_health_check_is_invalid_argument(api: Api) -> None:
    # Health is not ours, but it goes through the same interceptor and must not say UNKNOWN.
    with pytest.raises(grpc.RpcError) as info:
        _raw_unary(api, "/grpc.health.v1.Health/Check", UNDECODABLE_BYTES["truncated"])
    _assert_clean_invalid_argument(info.value)


def test_decodable_bytes_still_work(api: Api) -> None:
    # The wrapped deserializer must hand good bytes on unchanged.
    reply = _raw_unary(
        api,
        "/grpc.health.v1.Health/Check",
        health_pb2.HealthCheckRequest().SerializeToString(),
    )
    status = health_pb2.HealthCheckResponse.FromString(reply).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_undecodable_request_of_anonymous_caller_is_unauthenticated(api: Api) -> None:
    # Access comes first: a caller without a token learns nothing about its bytes.
    with grpc.insecure_channel(api.service.address) as channel:
        call = channel.unary_unary(
            "/agentic.projects.v1.ProjectService/CreateProject",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as info:
            call(UNDECODABLE_BYTES["truncated"], timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- malformed roles claim -----------------------------------------------------------------


@pytest.mark.parametrize(
    "roles",
    ["administrator", 7, ["administrator", 1], ["administrator", None], {"administrator": True}],
    ids=["string", "number", "list-with-number", "list-with-null", "object"],
)
def test_malformed_roles_claim_is_unauthenticated(api: Api, roles: object) -> None:
    token = dev_keys().mint("mallory", [], extra_claims={"roles": roles})
    with grpc.insecure_channel(api.service.address) as channel:
        call = channel.unary_unary(
            "/agentic.tasks.v1.TaskService/ListTasks",
            request_serializer=tasks_pb2.ListTasksRequest.SerializeToString,
            response_deserializer=tasks_pb2.ListTasksResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            call(
                tasks_pb2.ListTasksRequest(),
                metadata=(("authorization", bearer(token)),),
                timeout=TIMEOUT,
            )
    code, reason, _ = refused(info.value)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    # The same fixed message as any other malformed token: nothing about which claim.
    assert info.value.details() == "token is malformed"
