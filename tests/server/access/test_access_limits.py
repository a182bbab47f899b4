"""Authentication over real gRPC, members, limits and deadlines against real servers (issue #5).

- Every negative token case is UNAUTHENTICATED on a real call, and no token text reaches
  the server's log; tokens with no known role are PERMISSION_DENIED; health and
  reflection need no token.
- Members reach a project and its tasks but may not change who reaches it.
- Limits: a flood of WatchTask streams and a burst of submits from one principal are
  RESOURCE_EXHAUSTED with a RetryInfo while other principals are unaffected; unary calls
  beyond the concurrency limit are refused the same way; the server stays SERVING.
- Deadlines: a PostgreSQL statement stuck behind a lock is cancelled once the caller's
  deadline has passed (statement_timeout derived from the incoming deadline).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psycopg
import pytest
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import tasks_pb2 as tpb
from agentic.tasks.v1 import tasks_pb2_grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devtools.devkeys import DEV_AUDIENCE, DEV_ISSUER
from server.auth import Role
from tests._auth import bad_tokens
from tests._identity import authorized_channel, dev_keys, token_channel
from tests._processes import Service, start_service
from tests._support import health_status, postgres_database, wait_for
from tests.conftest import Api

TIMEOUT = 10


def _project_stub(channel: grpc.Channel) -> projects_pb2_grpc.ProjectServiceStub:
    return projects_pb2_grpc.ProjectServiceStub(channel)


def _task_stub(channel: grpc.Channel) -> tasks_pb2_grpc.TaskServiceStub:
    return tasks_pb2_grpc.TaskServiceStub(channel)


def _retry_delay(error: grpc.RpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None, "a refusal must carry a google.rpc.Status"
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToTimedelta().total_seconds())
    raise AssertionError(f"no RetryInfo in {status}")


# --- authentication ------------------------------------------------------------------------

BAD = bad_tokens(dev_keys(), issuer=DEV_ISSUER, audience=DEV_AUDIENCE)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_token_is_unauthenticated_on_a_real_call(api: Api, case: str) -> None:
    bad = BAD[case]
    with token_channel(api.service.address, bad) as channel:
        calls: tuple[Callable[[], object], ...] = (
            lambda: _project_stub(channel).ListProjects(ppb.ListProjectsRequest(), timeout=TIMEOUT),
            lambda: next(
                _task_stub(channel).WatchTask(
                    tpb.WatchTaskRequest(id=str(uuid.uuid4())), timeout=TIMEOUT
                )
            ),
        )
        for call in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, case
            message = refused.value.details() or ""
            assert all(part not in message for part in bad.split(".") if len(part) > 8)
    log = api.service.log()
    assert all(part not in log for part in bad.split(".") if len(part) > 8), "token in log"


def test_missing_token_is_unauthenticated_but_health_and_reflection_are_open(api: Api) -> None:
    with grpc.insecure_channel(api.service.address) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            _project_stub(channel).GetProject(
                ppb.GetProjectRequest(id=str(uuid.uuid4())), timeout=TIMEOUT
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert health_status(api.service.address) == "SERVING"


@pytest.mark.parametrize("roles", [(), ("auditor",)], ids=["no-roles", "unknown-role"])
def test_a_token_without_a_known_role_may_call_nothing(api: Api, roles: tuple[str, ...]) -> None:
    value = dev_keys().mint(f"nobody-{uuid.uuid4().hex[:6]}", list(roles))
    with (
        token_channel(api.service.address, value) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _project_stub(channel).ListProjects(ppb.ListProjectsRequest(), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --- members ---------------------------------------------------------------------------


def test_members_reach_the_project_but_cannot_change_who_does(api: Api) -> None:
    owner, member = f"owner-{uuid.uuid4().hex[:6]}", f"member-{uuid.uuid4().hex[:6]}"
    with (
        authorized_channel(api.service.address, owner, (Role.PROJECT_MANAGER,)) as o,
        authorized_channel(api.service.address, member, (Role.PROJECT_MANAGER,)) as m,
    ):
        made = (
            _project_stub(o)
            .CreateProject(
                ppb.CreateProjectRequest(project=ppb.Project(name="shared", member_ids=[member])),
                timeout=TIMEOUT,
            )
            .project
        )
        assert made.owner_id == owner
        assert list(made.member_ids) == [member]
        as_member = _project_stub(m)
        got = as_member.GetProject(ppb.GetProjectRequest(id=made.id), timeout=TIMEOUT)
        assert got.project.id == made.id
        listed = as_member.ListProjects(ppb.ListProjectsRequest(), timeout=TIMEOUT)
        assert [p.id for p in listed.projects] == [made.id]
        renamed = as_member.UpdateProject(
            ppb.UpdateProjectRequest(
                id=made.id,
                project=ppb.Project(name="renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            timeout=TIMEOUT,
        )
        assert renamed.project.name == "renamed"
        for paths, project in (
            (["member_ids"], ppb.Project(member_ids=[member, "friend"])),
            (["owner_id"], ppb.Project(owner_id=member)),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                as_member.UpdateProject(
                    ppb.UpdateProjectRequest(
                        id=made.id,
                        project=project,
                        update_mask=field_mask_pb2.FieldMask(paths=paths),
                    ),
                    timeout=TIMEOUT,
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, paths
        with pytest.raises(grpc.RpcError) as refused:
            as_member.DeleteProject(ppb.DeleteProjectRequest(id=made.id), timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        still = _project_stub(o).GetProject(ppb.GetProjectRequest(id=made.id), timeout=TIMEOUT)
        assert list(still.project.member_ids) == [member]


def test_tasks_of_a_project_are_reached_by_its_members(api: Api) -> None:
    tag = uuid.uuid4().hex[:6]
    owner, member, stranger = f"lead-{tag}", f"support-{tag}", f"outsider-{tag}"
    lead = (Role.PROJECT_MANAGER, Role.TECHNICAL_LEAD)
    with (
        authorized_channel(api.service.address, owner, lead) as o,
        authorized_channel(api.service.address, member, (Role.SUPPORT_ENGINEER,)) as m,
        authorized_channel(api.service.address, stranger, (Role.SUPPORT_ENGINEER,)) as x,
    ):
        project = (
            _project_stub(o)
            .CreateProject(
                ppb.CreateProjectRequest(project=ppb.Project(name="ops", member_ids=[member])),
                timeout=TIMEOUT,
            )
            .project
        )

        def probe(project_id: str) -> tpb.SubmitProbeRequest:
            return tpb.SubmitProbeRequest(
                request_id=str(uuid.uuid4()), project_id=project_id, probe=tpb.ProbeSpec(steps=1)
            )

        task = _task_stub(o).SubmitProbe(probe(project.id), timeout=TIMEOUT).task
        assert (task.owner_id, task.project_id) == (owner, project.id)
        as_member, as_stranger = _task_stub(m), _task_stub(x)
        assert as_member.GetTask(tpb.GetTaskRequest(id=task.id), timeout=TIMEOUT).task == task
        listed = as_member.ListTasks(tpb.ListTasksRequest(), timeout=TIMEOUT)
        assert [t.id for t in listed.tasks] == [task.id]
        stream = as_member.WatchTask(tpb.WatchTaskRequest(id=task.id), timeout=TIMEOUT)
        assert next(stream).event.task.id == task.id
        stream.cancel()
        with pytest.raises(grpc.RpcError) as hidden:
            as_stranger.GetTask(tpb.GetTaskRequest(id=task.id), timeout=TIMEOUT)
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        assert list(as_stranger.ListTasks(tpb.ListTasksRequest(), timeout=TIMEOUT).tasks) == []
        # Nobody files a task under a project they do not reach, or one that does not exist.
        for who, project_id in ((as_stranger, project.id), (as_member, str(uuid.uuid4()))):
            with pytest.raises(grpc.RpcError) as refused:
                who.SubmitProbe(probe(project_id), timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as malformed:
            as_member.SubmitProbe(probe("not-a-uuid"), timeout=TIMEOUT)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Leaving the project takes the task out of reach at once.
        _project_stub(o).UpdateProject(
            ppb.UpdateProjectRequest(
                id=project.id,
                project=ppb.Project(),
                update_mask=field_mask_pb2.FieldMask(paths=["member_ids"]),
            ),
            timeout=TIMEOUT,
        )
        with pytest.raises(grpc.RpcError) as gone:
            as_member.GetTask(tpb.GetTaskRequest(id=task.id), timeout=TIMEOUT)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


# --- limits ------------------------------------------------------------------------------

STREAMS = 3
BURST = 4


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    """A server (SQLite, no broker) with small limits."""
    workdir = tmp_path_factory.mktemp("limits")
    database = workdir / "api.db"
    service = start_service(
        "server",
        {
            "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
            "AGENTIC_METRICS_ADDRESS": "",
            "DATABASE_URL": f"sqlite:///{database}",
            "AGENTIC_CACHE_ADDRESS": "",
            "AGENTIC_SHUTDOWN_GRACE_SECONDS": "1",
            "AGENTIC_MAX_WATCH_STREAMS_PER_PRINCIPAL": str(STREAMS),
            "AGENTIC_SUBMIT_BURST": str(BURST),
            "AGENTIC_SUBMIT_RATE_PER_SECOND": "0.5",
            "AGENTIC_MAX_CONCURRENT_RPCS": "2",
            "AGENTIC_WATCH_HEARTBEAT_SECONDS": "30",
        },
        workdir,
    )
    yield service, database
    assert service.stop() == 0, service.log()


def _submit(stub: tasks_pb2_grpc.TaskServiceStub) -> tpb.Task:
    request = tpb.SubmitProbeRequest(request_id=str(uuid.uuid4()), probe=tpb.ProbeSpec(steps=1))
    task: tpb.Task = stub.SubmitProbe(request, timeout=TIMEOUT).task
    return task


def test_a_submit_burst_is_cut_at_the_per_principal_limit(limited: tuple[Service, Path]) -> None:
    service, _ = limited
    who = f"burst-{uuid.uuid4().hex[:6]}"
    with (
        authorized_channel(service.address, who, (Role.TECHNICAL_LEAD,)) as channel,
        authorized_channel(service.address, f"calm-{who}", (Role.TECHNICAL_LEAD,)) as other,
    ):
        stub = _task_stub(channel)
        accepted = [_submit(stub) for _ in range(BURST)]
        assert len({t.id for t in accepted}) == BURST
        with pytest.raises(grpc.RpcError) as refused:
            _submit(stub)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 0 < _retry_delay(refused.value) <= 2.0  # one token at 0.5/s
        assert _submit(_task_stub(other)).id  # another principal has its own bucket
    assert health_status(service.address) == "SERVING"


def test_a_flood_of_streams_is_capped_per_principal(limited: tuple[Service, Path]) -> None:
    service, _ = limited
    who = f"watcher-{uuid.uuid4().hex[:6]}"
    with (
        authorized_channel(service.address, who, (Role.SUPPORT_ENGINEER,)) as channel,
        authorized_channel(service.address, f"other-{who}", (Role.SUPPORT_ENGINEER,)) as other,
    ):
        stub = _task_stub(channel)
        task = _submit(stub)  # stays PENDING: no broker, so its stream stays open
        request = tpb.WatchTaskRequest(id=task.id)
        streams = [stub.WatchTask(request, timeout=60) for _ in range(STREAMS)]
        for stream in streams:
            assert next(stream).event.task.id == task.id  # open and replaying
        refused_calls = []
        for _ in range(20):  # the flood: every extra stream is refused at once
            extra = stub.WatchTask(request, timeout=TIMEOUT)
            with pytest.raises(grpc.RpcError) as refused:
                next(extra)
            refused_calls.append(refused.value)
        assert {e.code() for e in refused_calls} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert _retry_delay(refused_calls[0]) > 0
        # Another principal's streams are not counted against this one...
        other_stream = _task_stub(other).WatchTask(
            tpb.WatchTaskRequest(id=_submit(_task_stub(other)).id), timeout=60
        )
        assert next(other_stream).HasField("event")
        other_stream.cancel()
        # ...and closing one stream frees its slot.
        streams.pop().cancel()
        wait_for(
            lambda: _opens(stub, request), timeout=10, message="a freed slot to admit a stream"
        )
        for stream in streams:
            stream.cancel()
    assert health_status(service.address) == "SERVING"


def _opens(stub: tasks_pb2_grpc.TaskServiceStub, request: tpb.WatchTaskRequest) -> bool:
    stream = stub.WatchTask(request, timeout=TIMEOUT)
    try:
        next(stream)
        return True
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False
    finally:
        stream.cancel()


def test_unary_calls_beyond_the_concurrency_limit_are_refused(
    limited: tuple[Service, Path],
) -> None:
    service, database = limited
    who = f"busy-{uuid.uuid4().hex[:6]}"
    # Hold SQLite's write lock: the server's writes wait in the database (busy timeout),
    # keeping their calls in flight, which is what the limit counts.
    blocker = sqlite3.connect(database, timeout=TIMEOUT, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with (
        authorized_channel(service.address, who, (Role.PROJECT_MANAGER,)) as channel,
        ThreadPoolExecutor(2) as pool,
    ):
        stub = _project_stub(channel)

        def create(name: str) -> ppb.Project:
            request = ppb.CreateProjectRequest(project=ppb.Project(name=name))
            give_up = time.monotonic() + TIMEOUT
            while True:  # a probe below may hold a slot for a moment: then just call again
                try:
                    project: ppb.Project = stub.CreateProject(request, timeout=TIMEOUT).project
                    return project
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    if time.monotonic() > give_up:
                        raise AssertionError("a held call never got a slot") from error

        try:
            held = [pool.submit(create, f"held-{i}") for i in range(2)]
            refused: list[grpc.RpcError] = []

            def third_is_refused() -> bool:
                # A read: under SQLite's WAL it never waits for the write lock, so it
                # either runs at once (a slot was free: the held calls had not arrived
                # yet) or is refused because both slots are held.
                try:
                    stub.ListProjects(ppb.ListProjectsRequest(page_size=1), timeout=TIMEOUT)
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        refused.append(error)
                        return True
                    raise
                return False

            wait_for(third_is_refused, timeout=10, message="a call over the limit")
            assert _retry_delay(refused[0]) > 0
            assert health_status(service.address) == "SERVING", (
                "health is not counted against the limit"
            )
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert all(f.result(timeout=TIMEOUT).id for f in held), "held calls finish once free"


# --- deadlines -----------------------------------------------------------------------------


def test_a_statement_outliving_the_callers_deadline_is_cancelled(tmp_path: Path) -> None:
    with postgres_database(tmp_path / "pg") as url:
        service = start_service(
            "server",
            {
                "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
                "AGENTIC_METRICS_ADDRESS": "",
                "DATABASE_URL": url,
                "AGENTIC_CACHE_ADDRESS": "",
                "AGENTIC_SHUTDOWN_GRACE_SECONDS": "1",
            },
            tmp_path / "api",
        )
        try:
            with authorized_channel(service.address) as channel:
                stub = _project_stub(channel)
                made = stub.CreateProject(
                    ppb.CreateProjectRequest(project=ppb.Project(name="locked", owner_id="a")),
                    timeout=TIMEOUT,
                ).project
                with psycopg.connect(url.replace("+psycopg", "")) as locker:
                    locker.execute("SELECT 1 FROM projects WHERE id = %s FOR UPDATE", (made.id,))
                    update = ppb.UpdateProjectRequest(
                        id=made.id,
                        project=ppb.Project(description="late"),
                        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
                    )
                    with pytest.raises(grpc.RpcError) as late:
                        stub.UpdateProject(update, timeout=0.5)
                    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

                    def nobody_waits_on_the_lock() -> bool:
                        waiting = locker.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND wait_event_type = 'Lock' "
                            "AND pid <> pg_backend_pid()"
                        ).fetchone()
                        return waiting is not None and waiting[0] == 0

                    # Without the derived statement_timeout the server's UPDATE would wait
                    # for this lock as long as the test holds it.
                    wait_for(
                        nobody_waits_on_the_lock,
                        timeout=5,
                        message="the server's statement to be cancelled after the deadline",
                    )
                    locker.rollback()
                # The connection went back to the pool healthy: the next call works.
                again = stub.GetProject(ppb.GetProjectRequest(id=made.id), timeout=TIMEOUT)
                assert again.project.description == ""
        finally:
            assert service.stop() == 0, service.log()
