"""ProjectService over real gRPC against a real server process, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from agentic.projects.v1 import projects_pb2 as pb
from google.protobuf import field_mask_pb2
from sqlalchemy import select

from core.db import ProjectRow
from tests._status import RichStatus, rich_status
from tests.conftest import Api

TIMEOUT = 10.0


def failure(call: Callable[[], Any]) -> RichStatus:
    """Run ``call``, which must fail, and decode its rich status."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    decoded = rich_status(info.value)
    assert decoded.reason, "every error must carry ErrorInfo"
    return decoded


def snapshot(api: Api) -> list[tuple[Any, ...]]:
    """Every project row, straight from the database."""
    with api.engine.connect() as conn:
        rows = conn.execute(select(ProjectRow.__table__).order_by(ProjectRow.id))
        return [tuple(r) for r in rows]


def create(
    api: Api, name: str | None = None, owner: str = "alice", description: str = ""
) -> pb.Project:
    request = pb.CreateProjectRequest(
        project=pb.Project(
            name=name or f"p-{uuid.uuid4().hex[:8]}", owner_id=owner, description=description
        )
    )
    created: pb.Project = api.projects.CreateProject(request, timeout=TIMEOUT).project
    return created


def test_create_get_round_trip(api: Api) -> None:
    created = create(api, description="quarterly compliance")
    uuid.UUID(created.id, version=4)
    assert created.create_time.seconds > 0
    assert created.update_time == created.create_time
    assert created.etag
    got = api.projects.GetProject(pb.GetProjectRequest(id=created.id), timeout=TIMEOUT).project
    assert got == created


def test_create_ignores_output_only_fields(api: Api) -> None:
    request = pb.CreateProjectRequest(
        project=pb.Project(name=f"n-{uuid.uuid4().hex}", owner_id="bob", id="client-id", etag="x")
    )
    created = api.projects.CreateProject(request, timeout=TIMEOUT).project
    assert created.id != "client-id"
    assert created.etag != "x"


def test_duplicate_name_for_same_owner_is_already_exists(api: Api) -> None:
    first = create(api, owner="carol")
    before = snapshot(api)
    f = failure(lambda: create(api, name=first.name, owner="carol"))
    assert f.code == grpc.StatusCode.ALREADY_EXISTS
    assert (f.reason, f.domain) == ("PROJECT_NAME_TAKEN", "agentic.projects.v1")
    assert snapshot(api) == before
    create(api, name=first.name, owner="dave")  # another owner may reuse the name


@pytest.mark.parametrize(
    ("project", "field"),
    [
        (pb.Project(name="", owner_id="alice"), "project.name"),
        (pb.Project(name="x" * 10_000, owner_id="alice"), "project.name"),
        (pb.Project(name="ok", owner_id="o" * 129), "project.owner_id"),
        (pb.Project(name="ok", owner_id="bad owner\r\n"), "project.owner_id"),
        (pb.Project(name="ok", owner_id="alice", description="d" * 4001), "project.description"),
        (pb.Project(name="ok", owner_id="alice", member_ids=["bob", "bob"]), "project.member_ids"),
        (pb.Project(name="ok", owner_id="alice", member_ids=["b b"]), "project.member_ids[0]"),
    ],
    ids=[
        "empty-name",
        "10kb-name",
        "long-owner",
        "crlf-owner",
        "long-description",
        "dup-members",
        "bad-member",
    ],
)
def test_bad_create_is_invalid_argument_and_writes_nothing(
    api: Api, project: pb.Project, field: str
) -> None:
    before = snapshot(api)
    f = failure(
        lambda: api.projects.CreateProject(
            pb.CreateProjectRequest(project=project), timeout=TIMEOUT
        )
    )
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in f.violations, f.violations
    assert f.domain == "agentic.projects.v1"
    assert snapshot(api) == before


def test_missing_project_message_is_a_field_violation(api: Api) -> None:
    f = failure(lambda: api.projects.CreateProject(pb.CreateProjectRequest(), timeout=TIMEOUT))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "project" in f.violations


def test_unknown_and_malformed_ids(api: Api) -> None:
    missing = str(uuid.uuid4())
    f = failure(lambda: api.projects.GetProject(pb.GetProjectRequest(id=missing), timeout=TIMEOUT))
    assert (f.code, f.reason) == (grpc.StatusCode.NOT_FOUND, "PROJECT_NOT_FOUND")
    f = failure(lambda: api.projects.GetProject(pb.GetProjectRequest(id="nope"), timeout=TIMEOUT))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(f.violations) == {"id"}
    f = failure(
        lambda: api.projects.DeleteProject(pb.DeleteProjectRequest(id=missing), timeout=TIMEOUT)
    )
    assert f.code == grpc.StatusCode.NOT_FOUND


def test_list_paginates_in_creation_order_with_owner_filter(api: Api) -> None:
    owner = f"pager-{uuid.uuid4().hex[:8]}"
    made = [create(api, owner=owner).id for _ in range(7)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = api.projects.ListProjects(
            pb.ListProjectsRequest(page_size=3, page_token=token, owner_id=owner), timeout=TIMEOUT
        )
        seen += [p.id for p in page.projects]
        assert all(p.owner_id == owner for p in page.projects)
        pages += 1
        token = page.next_page_token
        if not token:
            break
        assert pages < 10, "pagination does not terminate"
    assert seen == made
    assert pages == 3


def test_list_default_page_size_and_unfiltered_listing(api: Api) -> None:
    owner = f"bulk-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        create(api, owner=owner)
    page = api.projects.ListProjects(pb.ListProjectsRequest(), timeout=TIMEOUT)
    assert 3 <= len(page.projects) <= 50
    assert {p.owner_id for p in page.projects} != {owner} or len(page.projects) == 3


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListProjectsRequest(page_size=-1), "page_size"),
        (pb.ListProjectsRequest(page_size=1001), "page_size"),
        (pb.ListProjectsRequest(page_token="!!not-a-token!!"), "page_token"),
        (pb.ListProjectsRequest(page_token="eyJ2IjoxfQ"), "page_token"),
        (pb.ListProjectsRequest(owner_id="spaces are bad"), "owner_id"),
    ],
    ids=["negative-size", "huge-size", "garbage-token", "truncated-token", "bad-owner"],
)
def test_bad_list_requests(api: Api, request_: pb.ListProjectsRequest, field: str) -> None:
    f = failure(lambda: api.projects.ListProjects(request_, timeout=TIMEOUT))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in f.violations, f.violations


def test_page_token_is_bound_to_its_filter(api: Api) -> None:
    owner = f"bound-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        create(api, owner=owner)
    page = api.projects.ListProjects(
        pb.ListProjectsRequest(page_size=1, owner_id=owner), timeout=TIMEOUT
    )
    assert page.next_page_token
    other = pb.ListProjectsRequest(
        page_size=1, owner_id="someone-else", page_token=page.next_page_token
    )
    f = failure(lambda: api.projects.ListProjects(other, timeout=TIMEOUT))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in f.violations


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def test_update_with_mask_and_etag(api: Api) -> None:
    project = create(api, description="old")
    updated = api.projects.UpdateProject(
        pb.UpdateProjectRequest(
            id=project.id,
            project=pb.Project(description="new", name=""),  # name is not in the mask
            update_mask=mask("description"),
            etag=project.etag,
        ),
        timeout=TIMEOUT,
    ).project
    assert updated.description == "new"
    assert updated.name == project.name
    assert updated.etag != project.etag
    assert updated.create_time == project.create_time
    assert updated.update_time.ToDatetime() >= project.update_time.ToDatetime()


def test_stale_etag_is_aborted_and_changes_nothing(api: Api) -> None:
    project = create(api)
    api.projects.UpdateProject(
        pb.UpdateProjectRequest(
            id=project.id, project=pb.Project(description="v2"), update_mask=mask("description")
        ),
        timeout=TIMEOUT,
    )
    before = snapshot(api)
    stale = pb.UpdateProjectRequest(
        id=project.id,
        project=pb.Project(description="v3"),
        update_mask=mask("description"),
        etag=project.etag,
    )
    f = failure(lambda: api.projects.UpdateProject(stale, timeout=TIMEOUT))
    assert (f.code, f.reason) == (grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    f = failure(
        lambda: api.projects.DeleteProject(
            pb.DeleteProjectRequest(id=project.id, etag=project.etag), timeout=TIMEOUT
        )
    )
    assert f.code == grpc.StatusCode.ABORTED
    assert snapshot(api) == before


@pytest.mark.parametrize(
    ("paths", "project", "field"),
    [
        ((), pb.Project(name="x"), "update_mask"),
        (("id",), pb.Project(name="x"), "update_mask"),
        (("name",), pb.Project(name=""), "project.name"),
        (("name",), pb.Project(name="n" * 201), "project.name"),
    ],
    ids=["empty-mask", "mask-output-only", "mask-empty-name", "mask-long-name"],
)
def test_bad_updates_are_invalid_argument_and_change_nothing(
    api: Api, paths: tuple[str, ...], project: pb.Project, field: str
) -> None:
    target = create(api)
    before = snapshot(api)
    request = pb.UpdateProjectRequest(id=target.id, project=project, update_mask=mask(*paths))
    f = failure(lambda: api.projects.UpdateProject(request, timeout=TIMEOUT))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in f.violations, f.violations
    assert snapshot(api) == before


def test_update_to_a_taken_name_is_already_exists(api: Api) -> None:
    a = create(api, owner="erin")
    b = create(api, owner="erin")
    before = snapshot(api)
    request = pb.UpdateProjectRequest(
        id=b.id, project=pb.Project(name=a.name), update_mask=mask("name")
    )
    f = failure(lambda: api.projects.UpdateProject(request, timeout=TIMEOUT))
    assert f.code == grpc.StatusCode.ALREADY_EXISTS
    assert snapshot(api) == before


def test_concurrent_conditional_updates_exactly_one_wins(api: Api) -> None:
    project = create(api)

    def attempt(i: int) -> grpc.StatusCode:
        try:
            api.projects.UpdateProject(
                pb.UpdateProjectRequest(
                    id=project.id,
                    project=pb.Project(description=f"writer {i}"),
                    update_mask=mask("description"),
                    etag=project.etag,
                ),
                timeout=TIMEOUT,
            )
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(attempt, range(8)))
    assert codes.count(grpc.StatusCode.OK) == 1, codes
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.ABORTED}, codes


def test_delete_then_get_is_not_found(api: Api) -> None:
    project = create(api)
    api.projects.DeleteProject(
        pb.DeleteProjectRequest(id=project.id, etag=project.etag), timeout=TIMEOUT
    )
    f = failure(
        lambda: api.projects.GetProject(pb.GetProjectRequest(id=project.id), timeout=TIMEOUT)
    )
    assert f.code == grpc.StatusCode.NOT_FOUND
