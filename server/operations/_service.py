"""google.longrunning.Operations over the task store: every task is an operation (AIP-151).

A thin view of TaskService, not a second implementation of it: each method parses the
operation name, runs the TaskService RPC it stands for on the same servicer object, and
maps the Task to an Operation (``_wire``). Authorization, reach, limits and errors are
therefore exactly those of that RPC, and the role table gives each method the roles of
its TaskService RPC:

    GetOperation     GetTask
    ListOperations   ListTasks   (``filter``: see ``_filter``; paging as ListTasks)
    CancelOperation  CancelTask  (an ended task: FAILED_PRECONDITION, as CancelTask)
    WaitOperation    GetTask, then WatchTask until the end or the wait's bound
    DeleteOperation  UNIMPLEMENTED

DeleteOperation is not served: a task is an auditable record, kept until the retention
job (or AdminService.PurgeTasks) removes it, and "delete" would either lie (leave the row)
or let any owner erase history. AIP-151 allows a service to answer UNIMPLEMENTED.

google.longrunning has no protovalidate rules, so the interceptor validates nothing
here; the requests this module builds (GetTaskRequest, ListTasksRequest) are checked
against their own proto rules instead, and violations are reported on the field of the
Operations request they came from.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

import grpc
from agentic.tasks.v1 import tasks_pb2
from google.longrunning import (  # type: ignore[import-untyped]  # googleapis-common-protos ships .pyi stubs but no py.typed marker
    operations_pb2_grpc,
    operations_proto_pb2,
)
from google.protobuf import empty_pb2

from core.deadline import deadline_remaining
from core.rpc import FieldViolation, InvalidArgument, validate_request
from core.tasks import DOMAIN, TERMINAL_STATES
from server.operations._filter import parse_filter
from server.operations._wire import COLLECTION, operation_of, task_id_of
from server.tasks import TaskService

__all__ = ["MAX_WAIT_SECONDS", "OperationsService"]

T = TypeVar("T")

MAX_WAIT_SECONDS = 30.0
"""The longest one WaitOperation waits, whatever its ``timeout`` (an unset timeout: this).

A waiting call is a unary RPC, so it holds one of the server's ``max_concurrent_rpcs``
slots (and one WatchTask stream of the caller's) for the whole wait; clients loop on
WaitOperation, as the LRO client libraries do, rather than hold a call for minutes."""

DEADLINE_MARGIN_SECONDS = 0.25
"""A wait ends this long before the call's deadline, time enough to read and send the
operation: the caller gets ``done=false`` rather than DEADLINE_EXCEEDED."""

# The ListTasksRequest fields a ListOperations request carries under its own names.
_PAGING_FIELDS = frozenset({"page_size", "page_token"})


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """``stream``, closed at the end of the block even when left early (a generator left
    suspended would hold its watch slot and feed until garbage collection)."""
    try:
        yield stream
    finally:
        if isinstance(stream, AsyncGenerator):
            await stream.aclose()


def _bad_timeout(description: str) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("timeout", description, reason="timeout.range")],
        reason="INVALID_ARGUMENT",
        domain=DOMAIN,
    )


def _list_tasks_request(request: Any) -> tasks_pb2.ListTasksRequest:
    """The ListTasksRequest of ListOperationsRequest ``request``, checked by its rules."""
    if request.name not in ("", COLLECTION):
        raise InvalidArgument(
            [FieldViolation("name", f"must be empty or {COLLECTION!r}", reason="name.collection")],
            domain=DOMAIN,
        )
    found = parse_filter(request.filter)
    listing = tasks_pb2.ListTasksRequest(
        page_size=request.page_size,
        page_token=request.page_token,
        state=found.state,
        kind=found.kind,
        owner_id=found.owner_id,
    )
    try:
        validate_request(listing, domain=DOMAIN)
    except InvalidArgument as exc:
        raise InvalidArgument(
            [
                v
                if v.field in _PAGING_FIELDS
                else FieldViolation("filter", f"{v.field}: {v.description}", v.reason)
                for v in exc.violations
            ],
            domain=DOMAIN,
        ) from None
    return listing


class OperationsService(operations_pb2_grpc.OperationsServicer):  # type: ignore[misc]  # untyped generated base (see the import)
    """google.longrunning.Operations as a view of ``tasks`` (see the module docstring)."""

    def __init__(self, tasks: TaskService, *, max_wait_seconds: float = MAX_WAIT_SECONDS) -> None:
        self._tasks = tasks
        self._max_wait_seconds = max_wait_seconds

    async def _task(self, task_id: str, context: grpc.aio.ServicerContext) -> tasks_pb2.Task:
        response = await self._tasks.GetTask(tasks_pb2.GetTaskRequest(id=task_id), context)
        return response.task

    async def GetOperation(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The operation of one task the caller reaches (GetTask)."""
        return operation_of(await self._task(task_id_of(request.name), context))

    async def ListOperations(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """One page, newest first, of the operations the caller reaches (ListTasks)."""
        listed = await self._tasks.ListTasks(_list_tasks_request(request), context)
        return operations_proto_pb2.ListOperationsResponse(
            operations=[operation_of(task) for task in listed.tasks],
            next_page_token=listed.next_page_token,
        )

    async def CancelOperation(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Cancel the task (CancelTask): at once if not started, else the worker stops it."""
        task_id = task_id_of(request.name)
        await self._tasks.CancelTask(tasks_pb2.CancelTaskRequest(id=task_id), context)
        return empty_pb2.Empty()

    async def DeleteOperation(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """UNIMPLEMENTED: tasks are kept until retention purges them (module docstring)."""
        # The error taxonomy (core.rpc) has no UNIMPLEMENTED: it is no domain error.
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "DeleteOperation is not supported: an operation is a task, kept until the "
            "retention job purges it; use CancelOperation to stop it",
        )

    async def WaitOperation(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The operation once done, or as it is when the wait ends (``done`` false).

        The wait is the shortest of ``timeout`` (unset: the server's maximum), the
        server's maximum, and the call's deadline less a margin. It follows the task's
        WatchTask stream (one shared feed per task, woken by the workers' notifications),
        so a waiting call costs no database reads of its own while nothing happens.
        """
        task_id = task_id_of(request.name)
        wait_seconds = self._wait_seconds(request)
        task = await self._task(task_id, context)
        if task.state in TERMINAL_STATES or wait_seconds <= 0:
            return operation_of(task)
        watch = tasks_pb2.WatchTaskRequest(id=task_id, after_sequence=task.last_sequence)
        with contextlib.suppress(TimeoutError):
            async with (
                asyncio.timeout(wait_seconds),
                _closing(self._tasks.WatchTask(watch, context)) as stream,
            ):
                async for item in stream:
                    if item.HasField("event") and item.event.terminal:
                        return operation_of(item.event.task)
        return operation_of(await self._task(task_id, context))

    def _wait_seconds(self, request: Any) -> float:
        """How long WaitOperation ``request`` may wait (INVALID_ARGUMENT on a bad timeout)."""
        wait = self._max_wait_seconds
        if request.HasField("timeout"):
            timeout = request.timeout
            if timeout.seconds < 0 or not 0 <= timeout.nanos < 1_000_000_000:
                raise _bad_timeout("must be a non-negative duration")
            wait = min(wait, timeout.seconds + timeout.nanos / 1e9)
        left = deadline_remaining()
        if left is not None:
            wait = min(wait, left - DEADLINE_MARGIN_SECONDS)
        return max(0.0, wait)
