"""TaskService servicer: map protos to domain calls and back, plus who may do what.

Requests arrive authenticated, authorized for the method by the role table and
validated against their proto rules (see server.access and core.rpc); domain errors
are mapped to statuses by the interceptor. Here: object-level reach (a task out of the
caller's reach is NOT_FOUND, streams included), the per-principal submit rate and the
per-principal cap on open WatchTask streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from agentic.tasks.v1 import tasks_pb2, tasks_pb2_grpc

from core.tasks._wire import DOMAIN
from server.access import RateLimiter, StreamSlots, current_principal, owner_for, viewer_of
from server.auth import Principal
from server.projects import project_not_found
from server.tasks._facade import Tasks
from server.tasks._metrics import SUBMITS, WATCH_STREAMS


class TaskService(tasks_pb2_grpc.TaskServiceServicer):
    """agentic.tasks.v1.TaskService over the Tasks facade."""

    def __init__(
        self,
        tasks: Tasks,
        *,
        submits: RateLimiter,
        watches: StreamSlots,
        project_reach: Callable[[str, Principal], Awaitable[bool]],
    ) -> None:
        self._tasks = tasks
        self._submits = submits
        self._watches = watches
        self._project_reach = project_reach

    async def SubmitProbe(
        self, request: tasks_pb2.SubmitProbeRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.SubmitProbeResponse:
        """Accept a probe task (idempotent on request_id) owned by the caller."""
        principal = current_principal()
        # Filled in before hashing: the idempotency key then covers the owner too, so
        # another principal reusing a request_id never gets this task back.
        request.owner_id = owner_for(
            principal, request.owner_id, action="submit a task", domain=DOMAIN
        )
        if request.project_id and not await self._project_reach(request.project_id, principal):
            raise project_not_found(request.project_id)  # as if it did not exist
        self._submits.acquire(principal.subject)
        task = await self._tasks.submit(
            kind=tasks_pb2.TASK_KIND_PROBE,
            spec=request.probe,
            request=request,
            owner_id=request.owner_id,
            priority=request.priority,
            request_id=request.request_id,
            project_id=request.project_id,
        )
        SUBMITS.labels("probe").inc()
        return tasks_pb2.SubmitProbeResponse(task=task)

    async def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.GetTaskResponse:
        """Return one task the caller reaches."""
        task = await self._tasks.get(request.id, viewer_of(current_principal()))
        return tasks_pb2.GetTaskResponse(task=task)

    async def ListTasks(
        self, request: tasks_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.ListTasksResponse:
        """Return one page of the tasks the caller reaches, newest first."""
        return await self._tasks.list_tasks(request, viewer=viewer_of(current_principal()))

    async def CancelTask(
        self, request: tasks_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.CancelTaskResponse:
        """Cancel a pending task, or ask a running one to stop."""
        await self._tasks.check_reach(request.id, viewer_of(current_principal()))
        return tasks_pb2.CancelTaskResponse(task=await self._tasks.cancel(request.id))

    async def RetryTask(
        self, request: tasks_pb2.RetryTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.RetryTaskResponse:
        """Run a failed or cancelled task again."""
        await self._tasks.check_reach(request.id, viewer_of(current_principal()))
        return tasks_pb2.RetryTaskResponse(task=await self._tasks.retry(request.id))

    async def WatchTask(
        self, request: tasks_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tasks_pb2.WatchTaskResponse]:
        """Stream the task's events from after_sequence on."""
        principal = current_principal()
        await self._tasks.check_reach(request.id, viewer_of(principal))
        with self._watches.hold(principal.subject):
            WATCH_STREAMS.inc()
            try:
                async for item in self._tasks.watch(request.id, request.after_sequence):
                    yield item
            finally:
                WATCH_STREAMS.dec()
