"""TaskService without workers: submit, idempotency, listing, cancel/retry, watch, errors.

A real server process on SQLite and on PostgreSQL, publishing to a private RabbitMQ
vhost where no worker consumes, so every task stays where the API put it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from sqlalchemy import func, select

from core.db import TaskOutboxRow
from tests._status import rich_status
from tests._support import fresh_database, health_status, wait_for
from tests.workers._stack import (
    TIMEOUT,
    Stack,
    event_counts,
    get,
    private_vhost,
    stack,
    submit,
    watch_to_end,
)


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A private vhost for this module."""
    with private_vhost() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tasks_stack(
    request: pytest.FixtureRequest, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, tasks_pb2_grpc.TaskServiceStub]]:
    """A server (no workers) on a fresh database of each backend."""
    workdir = tmp_path_factory.mktemp(f"tasks-api-{request.param}")
    with (
        fresh_database(request.param, workdir, "tasks") as url,
        stack(workdir, broker_url, url) as s,
    ):
        yield s, s.start_server()


Stub = tasks_pb2_grpc.TaskServiceStub


def rich_error(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """Run ``call``, which must fail: its code, ErrorInfo reason and field violations."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    decoded = rich_status(info.value)
    return decoded.code, decoded.reason, decoded.violations


def test_submit_is_durable_and_published(tasks_stack: tuple[Stack, Stub]) -> None:
    s, stub = tasks_stack
    task = submit(stub, steps=4, step_millis=5, priority=pb.PRIORITY_HIGH)
    uuid.UUID(task.id)
    assert task.state == pb.TASK_STATE_PENDING
    assert task.attempt == 1
    assert task.kind == pb.TASK_KIND_PROBE
    assert task.priority == pb.PRIORITY_HIGH
    assert task.probe.steps == 4
    assert task.last_sequence == 1
    assert not task.HasField("start_time")
    assert get(stub, task.id) == task
    # The fast path published with confirms and removed the outbox row.
    with s.db().connect() as conn:
        left = conn.scalar(
            select(func.count()).select_from(TaskOutboxRow).where(TaskOutboxRow.task_id == task.id)
        )
    assert left == 0


def test_resubmit_is_idempotent_and_reuse_is_refused(tasks_stack: tuple[Stack, Stub]) -> None:
    _, stub = tasks_stack
    request_id = str(uuid.uuid4())
    first = submit(stub, request_id=request_id, steps=2)
    again = submit(stub, request_id=request_id, steps=2)
    assert again == first
    code, reason, _ = rich_error(lambda: submit(stub, request_id=request_id, steps=3))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert reason == "REQUEST_ID_REUSED"
    code, reason, _ = rich_error(
        lambda: submit(stub, request_id=request_id, steps=2, priority=pb.PRIORITY_LOW)
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")


def test_bad_input_is_invalid_argument_with_field_violations(
    tasks_stack: tuple[Stack, Stub],
) -> None:
    _, stub = tasks_stack
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: submit(stub, request_id="not-a-uuid"), "request_id"),
        (lambda: submit(stub, steps=0), "probe.steps"),
        (lambda: submit(stub, steps=10_001), "probe.steps"),
        (lambda: submit(stub, step_millis=-1), "probe.step_millis"),
        (lambda: submit(stub, owner="bad owner!"), "owner_id"),
        (lambda: submit(stub, steps=3, fail_at_step=4), "probe"),
        (lambda: stub.ListTasks(pb.ListTasksRequest(page_size=-1), timeout=TIMEOUT), "page_size"),
        (lambda: stub.GetTask(pb.GetTaskRequest(id="nope"), timeout=TIMEOUT), "id"),
        (
            lambda: stub.ListTasks(pb.ListTasksRequest(page_token="garbage"), timeout=TIMEOUT),
            "page_token",
        ),
    ]
    for call, field in cases:
        code, _, violations = rich_error(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in violations, (field, violations)
    # fail_at_step > steps is a message-level rule: its violation names the rule, not a field.
    code, _, violations = rich_error(lambda: submit(stub, steps=3, fail_at_step=4))
    assert violations.get("probe") == "fail_at_step must be 0 or at most steps"


def test_unknown_task_is_not_found(tasks_stack: tuple[Stack, Stub]) -> None:
    _, stub = tasks_stack
    missing = str(uuid.uuid4())
    calls: list[Callable[[], Any]] = [
        lambda: stub.GetTask(pb.GetTaskRequest(id=missing), timeout=TIMEOUT),
        lambda: stub.CancelTask(pb.CancelTaskRequest(id=missing), timeout=TIMEOUT),
        lambda: stub.RetryTask(pb.RetryTaskRequest(id=missing), timeout=TIMEOUT),
        lambda: list(stub.WatchTask(pb.WatchTaskRequest(id=missing), timeout=TIMEOUT)),
    ]
    for call in calls:
        code, reason, _ = rich_error(call)
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND")


def test_list_pages_newest_first_with_filters(tasks_stack: tuple[Stack, Stub]) -> None:
    _, stub = tasks_stack
    owner = f"lister-{uuid.uuid4().hex[:6]}"
    made = [submit(stub, owner=owner) for _ in range(7)]
    stub.CancelTask(pb.CancelTaskRequest(id=made[2].id), timeout=TIMEOUT)
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = stub.ListTasks(
            pb.ListTasksRequest(owner_id=owner, page_size=3, page_token=token), timeout=TIMEOUT
        )
        assert len(page.tasks) <= 3
        seen += [t.id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert seen == [t.id for t in reversed(made)]
    pending = stub.ListTasks(
        pb.ListTasksRequest(owner_id=owner, state=pb.TASK_STATE_PENDING), timeout=TIMEOUT
    )
    assert [t.id for t in pending.tasks] == [t.id for t in reversed(made) if t.id != made[2].id]
    cancelled = stub.ListTasks(
        pb.ListTasksRequest(owner_id=owner, state=pb.TASK_STATE_CANCELLED, kind=pb.TASK_KIND_PROBE),
        timeout=TIMEOUT,
    )
    assert [t.id for t in cancelled.tasks] == [made[2].id]
    # Default page size is 50; a token only works with the filter it was issued for.
    first = stub.ListTasks(pb.ListTasksRequest(owner_id=owner, page_size=2), timeout=TIMEOUT)
    code, _, violations = rich_error(
        lambda: stub.ListTasks(
            pb.ListTasksRequest(owner_id="someone-else", page_token=first.next_page_token),
            timeout=TIMEOUT,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in violations
    everything = stub.ListTasks(pb.ListTasksRequest(owner_id=owner), timeout=TIMEOUT)
    assert len(everything.tasks) == 7
    assert everything.next_page_token == ""


def test_cancel_pending_then_retry(tasks_stack: tuple[Stack, Stub]) -> None:
    s, stub = tasks_stack
    task = submit(stub)
    cancelled = stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=TIMEOUT).task
    assert cancelled.state == pb.TASK_STATE_CANCELLED
    assert cancelled.HasField("end_time")
    assert cancelled.error.code == 1  # google.rpc.Code.CANCELLED
    code, reason, _ = rich_error(
        lambda: stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=TIMEOUT)
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TASK_ALREADY_ENDED")
    retried = stub.RetryTask(pb.RetryTaskRequest(id=task.id), timeout=TIMEOUT).task
    assert retried.state == pb.TASK_STATE_PENDING
    assert retried.attempt == 2
    assert not retried.HasField("error")
    assert not retried.HasField("end_time")
    code, reason, _ = rich_error(
        lambda: stub.RetryTask(pb.RetryTaskRequest(id=task.id), timeout=TIMEOUT)
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TASK_NOT_RETRYABLE")
    events = [e for e in _events(stub, task.id, until_sequence=3)]
    assert [(e.sequence, e.state, e.attempt) for e in events] == [
        (1, pb.TASK_STATE_PENDING, 1),
        (2, pb.TASK_STATE_CANCELLED, 1),
        (3, pb.TASK_STATE_PENDING, 2),
    ]
    assert events[1].terminal
    assert events[1].task.error == cancelled.error
    assert event_counts(s.db())[task.id] == (3, 3)


def _events(stub: Stub, task_id: str, *, until_sequence: int) -> list[pb.TaskEvent]:
    """Events of a task that has not ended, read until ``until_sequence``."""
    out: list[pb.TaskEvent] = []
    call = stub.WatchTask(pb.WatchTaskRequest(id=task_id), timeout=TIMEOUT)
    try:
        for item in call:
            if item.HasField("event"):
                out.append(item.event)
                if item.event.sequence >= until_sequence:
                    break
    finally:
        call.cancel()
    return out


def test_watch_of_an_ended_task_returns_history_and_ends_at_once(
    tasks_stack: tuple[Stack, Stub],
) -> None:
    _, stub = tasks_stack
    task = submit(stub)
    stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=TIMEOUT)
    begin = time.monotonic()
    events = watch_to_end(stub, task.id, timeout=5)
    assert [e.sequence for e in events] == [1, 2]
    assert events[-1].terminal
    assert watch_to_end(stub, task.id, after=1, timeout=5) == events[1:]
    assert watch_to_end(stub, task.id, after=2, timeout=5) == []
    # Well under one heartbeat interval each: nothing waited.
    assert time.monotonic() - begin < 1.5


def test_idle_watch_gets_heartbeats(tasks_stack: tuple[Stack, Stub]) -> None:
    _, stub = tasks_stack
    task = submit(stub)
    call = stub.WatchTask(pb.WatchTaskRequest(id=task.id, after_sequence=1), timeout=TIMEOUT)
    begin = time.monotonic()
    try:
        item = next(iter(call))
    finally:
        call.cancel()
    assert item.HasField("heartbeat")
    assert item.heartbeat.last_sequence == 1
    assert 0.5 < time.monotonic() - begin < 3.0  # AGENTIC_WATCH_HEARTBEAT_SECONDS=1


def test_submit_fails_unavailable_when_the_database_is_down(
    tasks_stack: tuple[Stack, Stub],
) -> None:
    s, stub = tasks_stack
    if not s.database_url.startswith("postgresql"):
        pytest.skip("taking the database away cheaply needs PostgreSQL")
    import psycopg

    name = s.database_url.rsplit("/", 1)[1]
    admin = (
        s.database_url.rsplit("/", 1)[0].replace("postgresql+psycopg", "postgresql") + "/postgres"
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    try:
        request_id = str(uuid.uuid4())
        code, reason, _ = rich_error(lambda: submit(stub, request_id=request_id))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
        # Health reflects it: with no database nothing can be served.
        address = s.servers[-1].address
        for service in ("", "dependency:database", "agentic.tasks.v1.TaskService"):

            def not_serving(service: str = service) -> bool:
                return health_status(address, service) == "NOT_SERVING"

            wait_for(
                not_serving,
                timeout=10,
                message=f"health {service!r} to turn NOT_SERVING without the database",
            )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    # Back: the same request_id is accepted (nothing was half-written before).
    results: list[pb.Task] = []

    def accepted() -> bool:
        try:
            results.append(submit(stub, request_id=request_id))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return False
        return True

    wait_for(accepted, timeout=10, message="submit to succeed once the database is back")
    wait_for(
        lambda: health_status(s.servers[-1].address, "") == "SERVING",
        timeout=10,
        message="health to return to SERVING with the database",
    )
    assert results[-1].attempt == 1
    assert results[-1].last_sequence == 1
