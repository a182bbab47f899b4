"""AdminService servicer: map protos to the Admin facade's calls, nothing more.

Requests arrive already validated against their proto rules (see core.rpc); the
semantic checks (a known namespace, terminal states, an age to purge at) are the
facade's, so that refusals are audited; domain errors are mapped by the interceptor.
"""

from __future__ import annotations

import grpc
from agentic.admin.v1 import admin_pb2, admin_pb2_grpc

from server.access import current_principal
from server.admin._facade import Admin


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    """agentic.admin.v1.AdminService over the Admin facade."""

    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    async def GetCacheStats(
        self, request: admin_pb2.GetCacheStatsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetCacheStatsResponse:
        """Return the sidecar's counters per namespace and its nodes' states."""
        return await self._admin.get_cache_stats(request, current_principal())

    async def ClearCacheNamespace(
        self, request: admin_pb2.ClearCacheNamespaceRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ClearCacheNamespaceResponse:
        """Invalidate every key of one namespace."""
        return await self._admin.clear_cache_namespace(request, current_principal())

    async def GetTaskStats(
        self, request: admin_pb2.GetTaskStatsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetTaskStatsResponse:
        """Return task counts, the oldest pending age and timings over a window."""
        return await self._admin.get_task_stats(request, current_principal())

    async def PurgeTasks(
        self, request: admin_pb2.PurgeTasksRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PurgeTasksResponse:
        """Delete (or count, dry) old terminal tasks and their events."""
        return await self._admin.purge_tasks(request, current_principal())

    async def ListAuditEvents(
        self, request: admin_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListAuditEventsResponse:
        """Return one page of the audit log, newest first."""
        return await self._admin.list_audit_events(request, current_principal())

    async def ListCacheKeys(
        self, request: admin_pb2.ListCacheKeysRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListCacheKeysResponse:
        """Return one page of the keys cached in a namespace."""
        return await self._admin.list_cache_keys(request, current_principal())

    async def WarmCache(
        self, request: admin_pb2.WarmCacheRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.WarmCacheResponse:
        """Enqueue a cache warming task."""
        return await self._admin.warm_cache(request, current_principal())

    async def RunJob(
        self, request: admin_pb2.RunJobRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RunJobResponse:
        """Submit a scheduled job's task now."""
        return await self._admin.run_job(request, current_principal())

    async def ListBackups(
        self, request: admin_pb2.ListBackupsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListBackupsResponse:
        """Return the backups in the backup destination, newest first."""
        return await self._admin.list_backups(request, current_principal())
