"""AdminService's operations as the servicer sees them: each one audited.

Every operation runs through ``Admin._audited``: the action, then one audit row with the
caller, the RPC, the request as JSON and the outcome (the status code name of what the
action raised, or OK). Database work runs in the database threads; the cache figures and
the namespace clear go to the same sidecar client the reads use.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from agentic.admin.v1 import admin_pb2
from agentic.tasks.v1 import tasks_pb2
from google.protobuf import duration_pb2, json_format, text_format
from google.protobuf.message import Message
from sqlalchemy import Engine

from core.audit import audited
from core.backup import BackupConfig
from core.cache import CacheClient, CacheClientError, Namespace
from core.db import in_database_thread
from core.rpc import FieldViolation, InvalidArgument, Unavailable
from core.tasks import queue_figures
from server.admin import _backups, _cache_keys, _jobs, _purge, _stats
from server.admin._audit import AuditLog, check_page_token
from server.auth import Principal

T = TypeVar("T")

SubmitKind = Callable[[int, Message], Awaitable[tasks_pb2.Task]]
"""(kind, its Submit request) -> the accepted task, on TaskService's submit path as the
calling principal (``server.tasks.TaskService.submit_kind``)."""

DOMAIN = "agentic.admin.v1"
DEFAULT_WINDOW = timedelta(hours=1)
SERVICE = "/agentic.admin.v1.AdminService/"


def _unavailable() -> Unavailable:
    return Unavailable(
        "the database is unavailable or timed out; try again",
        reason="DATABASE_UNAVAILABLE",
        domain=DOMAIN,
    )


def _cache_unavailable(error: CacheClientError) -> Unavailable:
    return Unavailable(
        f"the cache sidecar did not answer ({error}); try again",
        reason="CACHE_UNAVAILABLE",
        domain=DOMAIN,
    )


def _unknown_namespace(namespace: str, field: str = "namespace") -> InvalidArgument:
    names = ", ".join(n.value for n in Namespace)
    return InvalidArgument(
        [
            FieldViolation(
                field,
                f"{namespace[:63]!r} is not a cache namespace; one of: {names}",
                reason="namespace.unknown",
            )
        ],
        reason="UNKNOWN_NAMESPACE",
        domain=DOMAIN,
    )


def _duration(field: str, value: duration_pb2.Duration) -> timedelta:
    """``value`` as a timedelta; INVALID_ARGUMENT for a malformed Duration (out of range,
    nanos of the other sign), which protovalidate's range rules let through."""
    # The range google.protobuf.Duration defines (about 10,000 years either way).
    seconds_ok = -315_576_000_000 <= value.seconds <= 315_576_000_000
    nanos_ok = seconds_ok and -999_999_999 <= value.nanos <= 999_999_999
    signs_ok = value.seconds == 0 or value.nanos == 0 or (value.seconds > 0) == (value.nanos > 0)
    if not (nanos_ok and signs_ok):
        raise InvalidArgument(
            [FieldViolation(field, "is not a valid Duration", reason="duration.invalid")],
            reason="INVALID_DURATION",
            domain=DOMAIN,
        )
    return value.ToTimedelta()


def _summary(request: Message) -> str:
    """The request as proto3 JSON; a value JSON cannot carry (a malformed Duration, the
    input refused for it) is kept in the text format instead, so the refusal is audited."""
    try:
        return json_format.MessageToJson(request, indent=None, sort_keys=True)
    except (json_format.SerializeToJsonError, ValueError, TypeError):
        return json.dumps({"text": text_format.MessageToString(request, as_one_line=True)})


class Admin:
    """The operator actions over the database, the cache sidecar and the audit log."""

    def __init__(
        self,
        engine: Engine,
        executor: ThreadPoolExecutor,
        *,
        cache: CacheClient | None,
        submit: SubmitKind,
        broker_url: str = "",
        queues: Sequence[str] = (),
        backups: BackupConfig | None = None,
    ) -> None:
        self._backups = backups
        self._engine = engine
        self._executor = executor
        self._cache = cache
        self._submit = submit
        self._broker_url = broker_url
        self._queues = tuple(queues)
        self.audit = AuditLog(engine)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await in_database_thread(
            self._executor, functools.partial(fn, *args, **kwargs), unavailable=_unavailable
        )

    async def _audited(
        self, method: str, request: Message, principal: Principal, action: Awaitable[T]
    ) -> T:
        async def record(outcome: str) -> None:
            await self._run(
                self.audit.record,
                subject=principal.subject,
                action=SERVICE + method,
                request_json=_summary(request),
                outcome=outcome,
            )

        return await audited(action, record)

    async def get_cache_stats(
        self, request: admin_pb2.GetCacheStatsRequest, principal: Principal
    ) -> admin_pb2.GetCacheStatsResponse:
        """The sidecar's figures (cache_enabled false without a sidecar)."""

        async def action() -> admin_pb2.GetCacheStatsResponse:
            if self._cache is None:
                return admin_pb2.GetCacheStatsResponse(cache_enabled=False)
            try:
                return _stats.cache_stats(await self._cache.stats())
            except CacheClientError as error:
                raise _cache_unavailable(error) from None

        return await self._audited("GetCacheStats", request, principal, action())

    async def clear_cache_namespace(
        self, request: admin_pb2.ClearCacheNamespaceRequest, principal: Principal
    ) -> admin_pb2.ClearCacheNamespaceResponse:
        """Bump the namespace's generation in the sidecar."""

        async def action() -> admin_pb2.ClearCacheNamespaceResponse:
            try:
                namespace = Namespace(request.namespace)
            except ValueError:
                raise _unknown_namespace(request.namespace) from None
            if self._cache is None:
                return admin_pb2.ClearCacheNamespaceResponse(cleared=False)
            try:
                await self._cache.invalidate_namespace(namespace.value)
            except CacheClientError as error:
                raise _cache_unavailable(error) from None
            return admin_pb2.ClearCacheNamespaceResponse(cleared=True)

        return await self._audited("ClearCacheNamespace", request, principal, action())

    async def list_cache_keys(
        self, request: admin_pb2.ListCacheKeysRequest, principal: Principal
    ) -> admin_pb2.ListCacheKeysResponse:
        """One page of a namespace's cached keys, from the sidecar's key dump."""

        async def action() -> admin_pb2.ListCacheKeysResponse:
            try:
                namespace = Namespace(request.namespace)
            except ValueError:
                raise _unknown_namespace(request.namespace) from None
            if self._cache is None:
                return admin_pb2.ListCacheKeysResponse(cache_enabled=False)
            try:
                return await _cache_keys.list_cache_keys(
                    self._cache, namespace, request.page_size, request.page_token
                )
            except CacheClientError as error:
                raise _cache_unavailable(error) from None

        return await self._audited("ListCacheKeys", request, principal, action())

    async def warm_cache(
        self, request: admin_pb2.WarmCacheRequest, principal: Principal
    ) -> admin_pb2.WarmCacheResponse:
        """Submit a cache warming task (TASK_KIND_CACHE_WARM) of the named namespaces."""

        async def action() -> admin_pb2.WarmCacheResponse:
            namespaces = []
            for index, name in enumerate(request.namespaces):
                try:
                    namespaces.append(Namespace(name))
                except ValueError:
                    raise _unknown_namespace(name, f"namespaces[{index}]") from None
            submit = _cache_keys.warm_request(namespaces)
            return admin_pb2.WarmCacheResponse(
                task=await self._submit(tasks_pb2.TASK_KIND_CACHE_WARM, submit)
            )

        return await self._audited("WarmCache", request, principal, action())

    async def get_task_stats(
        self, request: admin_pb2.GetTaskStatsRequest, principal: Principal
    ) -> admin_pb2.GetTaskStatsResponse:
        """Counts and timings from the tasks table."""

        async def action() -> admin_pb2.GetTaskStatsResponse:
            window = (
                _duration("window", request.window)
                if request.HasField("window")
                else DEFAULT_WINDOW
            )
            response = await self._run(_stats.task_stats, self._engine, window=window)
            if self._broker_url:
                figures = await asyncio.to_thread(queue_figures, self._broker_url, self._queues)
                response.queues.extend(_stats.queue_depths(figures))
            return response

        return await self._audited("GetTaskStats", request, principal, action())

    async def purge_tasks(
        self, request: admin_pb2.PurgeTasksRequest, principal: Principal
    ) -> admin_pb2.PurgeTasksResponse:
        """Delete (or count) old terminal tasks and their events."""

        async def action() -> admin_pb2.PurgeTasksResponse:
            age = (
                _duration("older_than", request.older_than)
                if request.HasField("older_than")
                else None
            )
            states = _purge.check_request(
                None if age is None else age.total_seconds(), list(request.states)
            )
            assert age is not None  # check_request refused a missing age
            result = await self._run(
                _purge.purge_tasks,
                self._engine,
                older_than=age,
                states=states,
                dry_run=request.dry_run,
                batch_size=request.batch_size or _purge.DEFAULT_BATCH_SIZE,
            )
            return admin_pb2.PurgeTasksResponse(
                tasks=result.tasks,
                events=result.events,
                batches=result.batches,
                dry_run=request.dry_run,
            )

        return await self._audited("PurgeTasks", request, principal, action())

    async def run_job(
        self, request: admin_pb2.RunJobRequest, principal: Principal
    ) -> admin_pb2.RunJobResponse:
        """Submit a scheduled job's task now (a fresh request_id: every call is a run)."""

        async def action() -> admin_pb2.RunJobResponse:
            kind, submit_request = _jobs.job_request(request.job)
            return admin_pb2.RunJobResponse(task=await self._submit(kind, submit_request))

        return await self._audited("RunJob", request, principal, action())

    async def list_backups(
        self, request: admin_pb2.ListBackupsRequest, principal: Principal
    ) -> admin_pb2.ListBackupsResponse:
        """The backups in the backup destination, newest first (read in a thread: a
        directory scan or S3 requests)."""

        async def action() -> admin_pb2.ListBackupsResponse:
            return await asyncio.to_thread(_backups.list_backups, self._backups)

        return await self._audited("ListBackups", request, principal, action())

    async def list_audit_events(
        self, request: admin_pb2.ListAuditEventsRequest, principal: Principal
    ) -> admin_pb2.ListAuditEventsResponse:
        """One page of the audit log, newest first (this call is recorded after it)."""

        async def action() -> admin_pb2.ListAuditEventsResponse:
            check_page_token(request.page_token)
            page = await self._run(
                self.audit.list, page_size=request.page_size, page_token=request.page_token
            )
            return admin_pb2.ListAuditEventsResponse(
                audit_events=page.events, next_page_token=page.next_page_token
            )

        return await self._audited("ListAuditEvents", request, principal, action())
