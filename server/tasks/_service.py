"""TaskService servicer: map protos to domain calls and back, nothing more.

Requests arrive already validated against their proto rules (see server.rpc); domain
errors are mapped to statuses by the interceptor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from agentic.tasks.v1 import tasks_pb2, tasks_pb2_grpc

from server.tasks._facade import Tasks


class TaskService(tasks_pb2_grpc.TaskServiceServicer):
    """agentic.tasks.v1.TaskService over the Tasks facade."""

    def __init__(self, tasks: Tasks) -> None:
        self._tasks = tasks

    async def SubmitProbe(
        self, request: tasks_pb2.SubmitProbeRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.SubmitProbeResponse:
        """Accept a probe task (idempotent on request_id)."""
        task = await self._tasks.submit(
            kind=tasks_pb2.TASK_KIND_PROBE,
            spec=request.probe,
            request=request,
            owner_id=request.owner_id,
            priority=request.priority,
            request_id=request.request_id,
        )
        return tasks_pb2.SubmitProbeResponse(task=task)

    async def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.GetTaskResponse:
        """Return one task."""
        return tasks_pb2.GetTaskResponse(task=await self._tasks.get(request.id))

    async def ListTasks(
        self, request: tasks_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.ListTasksResponse:
        """Return one page of tasks, newest first."""
        return await self._tasks.list_tasks(request)

    async def CancelTask(
        self, request: tasks_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.CancelTaskResponse:
        """Cancel a pending task, or ask a running one to stop."""
        return tasks_pb2.CancelTaskResponse(task=await self._tasks.cancel(request.id))

    async def RetryTask(
        self, request: tasks_pb2.RetryTaskRequest, context: grpc.aio.ServicerContext
    ) -> tasks_pb2.RetryTaskResponse:
        """Run a failed or cancelled task again."""
        return tasks_pb2.RetryTaskResponse(task=await self._tasks.retry(request.id))

    async def WatchTask(
        self, request: tasks_pb2.WatchTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tasks_pb2.WatchTaskResponse]:
        """Stream the task's events from after_sequence on."""
        async for item in self._tasks.watch(request.id, request.after_sequence):
            yield item
