"""TaskService servicer: map protos to domain calls and back, plus who may do what.

Requests arrive authenticated, authorized for the method by the role table and
validated against their proto rules (see server.access and core.rpc); domain errors
are mapped to statuses by the interceptor. Here: object-level reach (a task out of the
caller's reach is NOT_FOUND, streams included), the per-principal submit rate and the
per-principal cap on open WatchTask streams.

Every kind's Submit RPC runs the one ``TaskService.submit`` path, so the owner rule, the
project reach, the rate limit, idempotency and the metric apply to each kind the same
way; the methods are derived from the protos (``server.tasks._kinds``), never written.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, cast

import grpc
from agentic.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from google.protobuf.message import Message

from core.tasks._wire import DOMAIN
from server.access import RateLimiter, StreamSlots, current_principal, owner_for, viewer_of
from server.auth import Principal
from server.projects import project_not_found
from server.tasks._facade import Tasks
from server.tasks._kinds import SUBMIT_RPCS, SubmitRpc
from server.tasks._metrics import SUBMITS, WATCH_STREAMS
from server.tasks._refs import RefResolver, resolve_refs


class _SubmitFields(Protocol):
    """The fields every Submit request has by convention (see ``server.tasks._kinds``)."""

    request_id: str
    owner_id: str
    project_id: str

    @property
    def priority(self) -> int: ...


class TaskService(tasks_pb2_grpc.TaskServiceServicer):
    """agentic.tasks.v1.TaskService over the Tasks facade.

    Its ``Submit<Name>`` methods, one per task kind, are attached below from
    ``SUBMIT_RPCS``: each is the generic ``submit`` path bound to its kind.
    """

    def __init__(
        self,
        tasks: Tasks,
        *,
        submits: RateLimiter,
        watches: StreamSlots,
        project_reach: Callable[[str, Principal], Awaitable[bool]],
        artifact_ref: RefResolver,
    ) -> None:
        self._tasks = tasks
        self._artifact_ref = artifact_ref
        self._submits = submits
        self._watches = watches
        self._project_reach = project_reach

    async def submit(self, rpc: SubmitRpc, request: Message) -> Message:
        """The one submit path of every kind: owner rule, project reach, rate limit,
        idempotent durable submit, metric; ``rpc`` says where the kind's fields are."""
        # The fields exist with these types: SUBMIT_RPCS checked the protos at import.
        fields = cast(_SubmitFields, request)
        principal = current_principal()
        # Filled in before hashing: the idempotency key then covers the owner too, so
        # another principal reusing a request_id never gets this task back.
        fields.owner_id = owner_for(
            principal, fields.owner_id, action="submit a task", domain=DOMAIN
        )
        if fields.project_id and not await self._project_reach(fields.project_id, principal):
            raise project_not_found(fields.project_id)  # as if it did not exist
        await resolve_refs(
            rpc.spec(request), rpc.spec_field, fields.project_id, principal, self._artifact_ref
        )
        self._submits.acquire(principal.subject)
        task = await self._tasks.submit(
            kind=rpc.kind,
            spec=rpc.spec(request),
            request=request,
            owner_id=fields.owner_id,
            priority=fields.priority,
            request_id=fields.request_id,
            project_id=fields.project_id,
        )
        SUBMITS.labels(rpc.name).inc()
        return rpc.response_type(task=task)

    async def submit_kind(self, kind: int, request: Message) -> tasks_pb2.Task:
        """Submit ``request`` (``kind``'s Submit request) on the one submit path, as the
        calling principal: how another service of this server (AdminService.WarmCache,
        RunJob) starts a task, with every rule a Submit RPC applies."""
        response = await self.submit(_BY_KIND[kind], request)
        task: tasks_pb2.Task = response.task  # type: ignore[attr-defined]  # every Submit response
        return task

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


Handler = Callable[[TaskService, Message, grpc.aio.ServicerContext], Awaitable[Message]]


def _submit_handler(rpc: SubmitRpc) -> Handler:
    async def handler(
        self: TaskService, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        return await self.submit(rpc, request)

    handler.__name__ = rpc.method
    handler.__qualname__ = f"{TaskService.__qualname__}.{rpc.method}"
    # The proto's comment on the RPC, which codegen copies onto the generated base method.
    documented = inspect.getdoc(getattr(tasks_pb2_grpc.TaskServiceServicer, rpc.method, None))
    handler.__doc__ = documented or f"Accept a {rpc.name} task owned by the caller."
    return handler


_BY_KIND: dict[int, SubmitRpc] = {rpc.kind: rpc for rpc in SUBMIT_RPCS}

for _rpc in SUBMIT_RPCS:
    setattr(TaskService, _rpc.method, _submit_handler(_rpc))
