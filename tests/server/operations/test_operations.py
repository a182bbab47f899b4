"""google.longrunning.Operations over tasks, against a real server and a real worker.

A generic LRO client (here a plain ``OperationsStub``: google-api-core is not in
requirements.lock) waits on a probe and unpacks its typed result, which must equal what
GetTask reports; CancelOperation cancels; failures carry the task's Status; another
user's operation does not exist for them; bad names and filters are INVALID_ARGUMENT on
the right field; a short wait on a running task answers done=false on time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

import grpc
import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from google.longrunning import (  # type: ignore[import-untyped]  # .pyi stubs, no py.typed marker
    operations_pb2_grpc,
    operations_proto_pb2,
)
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.auth import Role
from tests._identity import authorized_channel
from tests._status import rich_status
from tests.workers._stack import TIMEOUT, Stack, get, private_vhost, stack, submit, wait_state

# google.longrunning is untyped to mypy (see the import): the stub and Operation are Any.
Ops: TypeAlias = Any
Operation: TypeAlias = Any
OWNER = "alice"


def _seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def _name(task_id: str) -> str:
    return f"operations/{task_id}"


class World:
    """The stack, an Administrator's TaskService stub and Operations stubs per caller."""

    def __init__(self, s: Stack, tasks: tasks_pb2_grpc.TaskServiceStub) -> None:
        self.stack = s
        self.tasks = tasks
        address = s.servers[0].address
        self.owner = self._stub(address, OWNER)
        self.stranger = self._stub(address, f"mallory-{uuid.uuid4().hex[:6]}")

    def _stub(self, address: str, subject: str) -> Ops:
        # Technical Leads may Get, List, Wait and Cancel (the roles of the TaskService RPCs).
        channel = authorized_channel(address, subject, (Role.TECHNICAL_LEAD,))
        self.stack.channels.append(channel)
        return operations_pb2_grpc.OperationsStub(channel)

    def wait(self, stub: Ops, task_id: str, timeout: float = 10.0) -> Operation:
        request = operations_proto_pb2.WaitOperationRequest(
            name=_name(task_id), timeout=_seconds(timeout)
        )
        return stub.WaitOperation(request, timeout=timeout + TIMEOUT)

    def running(self) -> pb.Task:
        """A long probe of OWNER (200 steps of 100 ms), once it runs."""
        task = submit(self.tasks, owner=OWNER, steps=200, step_millis=100)
        return wait_state(self.tasks, task.id, {pb.TASK_STATE_RUNNING})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One server and one worker (concurrency 2) on SQLite, on a private vhost."""
    workdir = tmp_path_factory.mktemp("operations")
    with (
        private_vhost() as broker_url,
        stack(workdir, broker_url, f"sqlite:///{workdir / 'tasks.db'}") as s,
    ):
        tasks = s.start_server()
        s.start_worker()
        yield World(s, tasks)


def _task_of(operation: Operation) -> pb.Task:
    task = pb.Task()
    assert operation.metadata.Unpack(task), operation.metadata.type_url
    return task


def _error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


def test_wait_returns_the_typed_result_getTask_reports(world: World) -> None:
    task = submit(world.tasks, owner=OWNER, steps=3, step_millis=30)
    operation = world.wait(world.owner, task.id)
    assert operation.name == _name(task.id)
    assert operation.done
    assert operation.WhichOneof("result") == "response"
    assert operation.response.type_url == "type.googleapis.com/agentic.tasks.v1.ProbeResult"
    result = pb.ProbeResult()
    assert operation.response.Unpack(result)
    reported = get(world.tasks, task.id)
    assert reported.state == pb.TASK_STATE_SUCCEEDED
    assert result == reported.probe_result
    assert result.steps_completed == 3
    assert _task_of(operation) == reported
    # Polling, as an LRO client without WaitOperation does, gives the same operation.
    polled = world.owner.GetOperation(
        operations_proto_pb2.GetOperationRequest(name=_name(task.id)), timeout=TIMEOUT
    )
    assert polled == operation


def test_cancel_operation_cancels_a_running_probe(world: World) -> None:
    task = world.running()
    world.owner.CancelOperation(
        operations_proto_pb2.CancelOperationRequest(name=_name(task.id)), timeout=TIMEOUT
    )
    operation = world.wait(world.owner, task.id)
    assert operation.done, _task_of(operation).state
    assert operation.WhichOneof("result") == "error"
    assert operation.error.code == code_pb2.CANCELLED
    assert _error_info(operation.error).reason == "TASK_CANCELLED"
    reported = get(world.tasks, task.id)
    assert reported.state == pb.TASK_STATE_CANCELLED
    assert operation.error == reported.error
    # CancelOperation is CancelTask: an ended task cannot be cancelled again.
    with pytest.raises(grpc.RpcError) as again:
        world.owner.CancelOperation(
            operations_proto_pb2.CancelOperationRequest(name=_name(task.id)), timeout=TIMEOUT
        )
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_failing_probe_yields_its_status_and_reason(world: World) -> None:
    task = submit(world.tasks, owner=OWNER, steps=3, step_millis=10, fail_at_step=2)
    operation = world.wait(world.owner, task.id)
    assert operation.done
    assert operation.WhichOneof("result") == "error"
    reported = get(world.tasks, task.id)
    assert reported.state == pb.TASK_STATE_FAILED
    assert operation.error == reported.error
    assert operation.error.code == code_pb2.FAILED_PRECONDITION
    assert "step 2" in operation.error.message
    info = _error_info(operation.error)
    assert (info.reason, info.domain) == ("PROBE_FAILED", "agentic.tasks.v1")


def test_another_users_operation_is_not_found(world: World) -> None:
    task = world.running()
    name = _name(task.id)

    def get_operation(stub: Ops) -> Operation:
        return stub.GetOperation(
            operations_proto_pb2.GetOperationRequest(name=name), timeout=TIMEOUT
        )

    def cancel_operation(stub: Ops) -> Any:
        return stub.CancelOperation(
            operations_proto_pb2.CancelOperationRequest(name=name), timeout=TIMEOUT
        )

    calls: dict[str, Callable[[Ops], Any]] = {
        "GetOperation": get_operation,
        "WaitOperation": lambda stub: world.wait(stub, task.id, timeout=1.0),
        "CancelOperation": cancel_operation,
    }
    for method, call in calls.items():
        with pytest.raises(grpc.RpcError) as refused:
            call(world.stranger)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND, method
    listed = world.stranger.ListOperations(
        operations_proto_pb2.ListOperationsRequest(name="operations", page_size=1000),
        timeout=TIMEOUT,
    )
    assert name not in {o.name for o in listed.operations}
    # The owner reaches it, and the stranger's cancel changed nothing.
    assert _task_of(get_operation(world.owner)).state == pb.TASK_STATE_RUNNING
    cancel_operation(world.owner)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "tasks/00000000-0000-4000-8000-000000000001",
        "operations/",
        "operations/not-a-uuid",
        "operations",
    ],
)
def test_a_bad_name_is_invalid_argument_on_name(world: World, name: str) -> None:
    stub = world.owner
    for method, request in (
        (stub.GetOperation, operations_proto_pb2.GetOperationRequest(name=name)),
        (stub.WaitOperation, operations_proto_pb2.WaitOperationRequest(name=name)),
        (stub.CancelOperation, operations_proto_pb2.CancelOperationRequest(name=name)),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            method(request, timeout=TIMEOUT)
        status = rich_status(refused.value)
        assert status.code == grpc.StatusCode.INVALID_ARGUMENT
        assert status.reason == "INVALID_OPERATION_NAME"
        assert set(status.violations) == {"name"}, status.violations


def test_an_unknown_operation_is_not_found(world: World) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        world.owner.GetOperation(
            operations_proto_pb2.GetOperationRequest(name=_name(str(uuid.uuid4()))),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_short_wait_on_a_running_task_returns_not_done_in_time(world: World) -> None:
    task = world.running()
    try:
        begin = time.monotonic()
        operation = world.wait(world.owner, task.id, timeout=0.5)
        elapsed = time.monotonic() - begin
        assert not operation.done
        assert operation.WhichOneof("result") is None
        assert _task_of(operation).state == pb.TASK_STATE_RUNNING
        assert 0.4 <= elapsed < 3.0, elapsed
        # No timeout in the request: the call's deadline bounds the wait, and the answer
        # comes before it (done=false), not DEADLINE_EXCEEDED.
        begin = time.monotonic()
        operation = world.owner.WaitOperation(
            operations_proto_pb2.WaitOperationRequest(name=_name(task.id)), timeout=1.5
        )
        elapsed = time.monotonic() - begin
        assert not operation.done
        assert 0.9 <= elapsed < 1.5, elapsed
    finally:
        world.owner.CancelOperation(
            operations_proto_pb2.CancelOperationRequest(name=_name(task.id)), timeout=TIMEOUT
        )


def test_a_negative_wait_timeout_is_invalid_argument(world: World) -> None:
    request = operations_proto_pb2.WaitOperationRequest(
        name=_name(str(uuid.uuid4())), timeout=duration_pb2.Duration(seconds=-1)
    )
    with pytest.raises(grpc.RpcError) as refused:
        world.owner.WaitOperation(request, timeout=TIMEOUT)
    assert set(rich_status(refused.value).violations) == {"timeout"}


def test_list_filters_by_state_and_pages_like_list_tasks(world: World) -> None:
    running = world.running()
    try:
        done = submit(world.tasks, owner=OWNER, steps=1, step_millis=0)
        assert world.wait(world.owner, done.id).done
        for text in ("state=RUNNING", 'state = TASK_STATE_RUNNING AND owner_id = "alice"'):
            listed = world.owner.ListOperations(
                operations_proto_pb2.ListOperationsRequest(filter=text, page_size=1000),
                timeout=TIMEOUT,
            )
            names = {o.name for o in listed.operations}
            assert _name(running.id) in names, text
            assert _name(done.id) not in names, text
            assert all(_task_of(o).state == pb.TASK_STATE_RUNNING for o in listed.operations)
        # Paging: page_size and page_token behave as ListTasks'.
        first = world.owner.ListOperations(
            operations_proto_pb2.ListOperationsRequest(name="operations", page_size=1),
            timeout=TIMEOUT,
        )
        assert len(first.operations) == 1
        assert first.next_page_token
        second = world.owner.ListOperations(
            operations_proto_pb2.ListOperationsRequest(
                name="operations", page_size=1, page_token=first.next_page_token
            ),
            timeout=TIMEOUT,
        )
        assert len(second.operations) == 1
        assert second.operations[0].name != first.operations[0].name
    finally:
        world.owner.CancelOperation(
            operations_proto_pb2.CancelOperationRequest(name=_name(running.id)), timeout=TIMEOUT
        )


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"filter": "state=RUNNING OR state=PENDING"}, "filter"),
        ({"filter": "done=true"}, "filter"),
        ({"filter": "state=SLEEPING"}, "filter"),
        ({"filter": "state=RUNNING AND state=PENDING"}, "filter"),
        ({"filter": 'owner_id="no spaces allowed"'}, "filter"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "garbage"}, "page_token"),
        ({"name": "projects/x/operations"}, "name"),
    ],
)
def test_a_bad_list_request_is_invalid_argument(
    world: World, request_fields: dict[str, object], field: str
) -> None:
    request = operations_proto_pb2.ListOperationsRequest(**request_fields)
    with pytest.raises(grpc.RpcError) as refused:
        world.owner.ListOperations(request, timeout=TIMEOUT)
    status = rich_status(refused.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(status.violations) == {field}, status.violations


def test_delete_operation_is_unimplemented_with_a_reason(world: World) -> None:
    task = submit(world.tasks, owner=OWNER, steps=1, step_millis=0)
    with pytest.raises(grpc.RpcError) as refused:
        world.owner.DeleteOperation(
            operations_proto_pb2.DeleteOperationRequest(name=_name(task.id)), timeout=TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CancelOperation" in (refused.value.details() or "")
