"""Projects as the servicer sees them: cached reads, invalidating writes, domain events.

Reads go through the cache sidecar (``read_through``): a hit never touches the database;
a miss lets exactly one caller across the fleet load from the database and fill. When the
sidecar or Memcached is down, reads fall back to the database, at most
``origin_concurrency`` at a time, so a cache outage cannot stampede the database.

Writes commit first, then invalidate through the sidecar (the project's key, and every
list page by a namespace generation bump), then publish a domain event, and only then
return. A sidecar that cannot be reached does not fail a committed write. Instead the
invalidation is kept as pending: until a background task has delivered every pending
invalidation, this server reads from the database only, so it never serves a value older
than a write it acknowledged. The domain event carries the same invalidation to the
durable queues of the other sidecars.

Every operation acts for a principal. Cached values are whole projects (owner and members
included), so a cached read is checked for reach exactly like a database read; list pages
are cached per viewer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from agentic.projects.v1 import projects_pb2
from prometheus_client import Counter, Gauge

from cache_sidecar.client import CacheClient, CacheClientError
from server.access import owner_for
from server.auth import Principal
from server.db import in_database_thread
from server.events import Publisher
from server.projects._store import DOMAIN, ProjectStore, project_not_found, reaches
from server.projects._wire import to_proto
from server.rpc import NotFound, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

PROJECTS_NAMESPACE = "projects"
LISTS_NAMESPACE = "project_lists"

ORIGIN_LOADS = Counter(
    "agentic_origin_loads_total", "Reads answered from the database.", ("resource",)
)
INVALIDATION_FAILURES = Counter(
    "agentic_cache_invalidation_failures_total",
    "Attempts to deliver a write's cache invalidation that failed (it stays pending).",
    ("namespace",),
)
PENDING_INVALIDATIONS = Gauge(
    "agentic_cache_pending_invalidations",
    "Undelivered cache invalidations; while above 0 this server reads the database only.",
)


def _unavailable() -> Unavailable:
    return Unavailable(
        "the project database is unavailable or timed out; try again",
        reason="DATABASE_UNAVAILABLE",
        domain=DOMAIN,
    )


def viewer_of(principal: Principal) -> str | None:
    """The id object-level checks use: None for an Administrator, who reaches everything."""
    return None if principal.is_administrator else principal.subject


class Projects:
    """Async operations on projects over a store, a cache client and an event publisher."""

    def __init__(
        self,
        store: ProjectStore,
        executor: ThreadPoolExecutor,
        *,
        cache: CacheClient | None,
        publisher: Publisher,
        origin_concurrency: int,
    ) -> None:
        self._store = store
        self._executor = executor
        self._cache = cache
        self._publisher = publisher
        self._origin = asyncio.Semaphore(origin_concurrency)
        # Invalidations not yet delivered: (namespace, key), key None for a whole namespace.
        self._pending: set[tuple[str, bytes | None]] = set()
        self._redeliver: asyncio.Task[None] | None = None

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await in_database_thread(
            self._executor, functools.partial(fn, *args, **kwargs), unavailable=_unavailable
        )

    async def _read(
        self, namespace: str, key: bytes, load: Callable[[], Any], resource: str
    ) -> bytes | None:
        async def loader() -> bytes | None:
            async with self._origin:
                ORIGIN_LOADS.labels(resource).inc()
                result: bytes | None = await self._run(load)
                return result

        if self._cache is None or self._pending:
            return await loader()
        return await self._cache.read_through(namespace, key, loader)

    async def get(self, project_id: str, principal: Principal) -> projects_pb2.Project:
        """The project, from the cache when it holds it.

        NOT_FOUND when it does not exist or ``principal`` does not reach it.
        """

        def load() -> bytes | None:
            try:
                return to_proto(self._store.get(project_id)).SerializeToString()
            except NotFound:
                return None  # cached as a negative entry, briefly

        data = await self._read(PROJECTS_NAMESPACE, project_id.encode(), load, "project")
        if data is None:
            raise project_not_found(project_id)
        project = projects_pb2.Project.FromString(data)
        viewer = viewer_of(principal)
        if not reaches(viewer, project.owner_id, project.member_ids):
            raise project_not_found(project_id)  # the same answer as a missing project
        return project

    async def reaches(self, project_id: str, principal: Principal) -> bool:
        """Whether ``principal`` reaches project ``project_id`` (False when it is missing)."""
        try:
            await self.get(project_id, principal)
        except NotFound:
            return False
        return True

    async def list(
        self, request: projects_pb2.ListProjectsRequest, principal: Principal
    ) -> projects_pb2.ListProjectsResponse:
        """One page of what ``principal`` reaches; cached per (viewer, filter, size, token)."""
        viewer = viewer_of(principal)
        # A bad token must fail before anyone takes a lease on it.
        self._store.check_page_token(request.page_token, owner_id=request.owner_id, viewer=viewer)

        def load() -> bytes:
            page = self._store.list(
                page_size=request.page_size,
                page_token=request.page_token,
                owner_id=request.owner_id,
                viewer=viewer,
            )
            response = projects_pb2.ListProjectsResponse(
                projects=[to_proto(p) for p in page.projects],
                next_page_token=page.next_page_token,
            )
            return response.SerializeToString()

        scope = b"*" if viewer is None else viewer.encode()
        key = scope + b"\n" + request.SerializeToString(deterministic=True)
        data = await self._read(LISTS_NAMESPACE, key, load, "project_list")
        return projects_pb2.ListProjectsResponse.FromString(data or b"")

    async def create(
        self,
        *,
        name: str,
        description: str,
        owner_id: str,
        member_ids: Sequence[str],
        principal: Principal,
    ) -> projects_pb2.Project:
        """Create a project owned by ``owner_id`` (the caller when empty).

        Only an Administrator may create a project for someone else. List pages are
        invalidated before returning.
        """
        owner_id = owner_for(principal, owner_id, action="create a project", domain=DOMAIN)
        project = await self._run(
            self._store.create,
            name=name,
            description=description,
            owner_id=owner_id,
            member_ids=member_ids,
        )
        await self._after_write("project.created", project.id, key_changed=False)
        return to_proto(project)

    async def update(
        self,
        project_id: str,
        fields: dict[str, str],
        *,
        etag: str,
        member_ids: Sequence[str] | None,
        principal: Principal,
    ) -> projects_pb2.Project:
        """Apply ``fields`` (and the member list when given) for ``principal``.

        The cached project and list pages are invalidated before returning.
        """
        project = await self._run(
            self._store.update,
            project_id,
            fields,
            etag=etag,
            member_ids=member_ids,
            viewer=viewer_of(principal),
        )
        await self._after_write("project.updated", project_id, key_changed=True)
        return to_proto(project)

    async def delete(self, project_id: str, *, etag: str, principal: Principal) -> None:
        """Delete; the cached project and list pages are invalidated before returning."""
        await self._run(self._store.delete, project_id, etag=etag, viewer=viewer_of(principal))
        await self._after_write("project.deleted", project_id, key_changed=True)

    async def _after_write(self, event_type: str, project_id: str, *, key_changed: bool) -> None:
        if self._cache is not None:
            if key_changed:
                self._pending.add((PROJECTS_NAMESPACE, project_id.encode()))
            self._pending.add((LISTS_NAMESPACE, None))
            await self._deliver_pending()
            if self._pending and (self._redeliver is None or self._redeliver.done()):
                self._redeliver = asyncio.create_task(self._redeliver_until_done())
        await self._run(self._publisher.publish, event_type, project_id=project_id)

    async def _deliver_pending(self) -> None:
        """Try every pending invalidation once; keep those that failed."""
        assert self._cache is not None
        for item in list(self._pending):
            namespace, key = item
            try:
                if key is None:
                    await self._cache.invalidate_namespace(namespace)
                else:
                    await self._cache.invalidate(namespace, [key])
            except CacheClientError:
                INVALIDATION_FAILURES.labels(namespace).inc()
                continue
            self._pending.discard(item)
        PENDING_INVALIDATIONS.set(len(self._pending))

    async def _redeliver_until_done(self) -> None:
        delay = 0.05
        while self._pending:
            log.warning(
                "%d cache invalidation(s) undelivered; reading from the database meanwhile",
                len(self._pending),
            )
            await asyncio.sleep(delay)
            await self._deliver_pending()
            delay = min(delay * 2, 2.0)
        log.info("pending cache invalidations delivered; reading through the cache again")

    async def close(self) -> None:
        """Stop redelivering (on shutdown; the domain events still carry what is left)."""
        if self._redeliver is not None:
            self._redeliver.cancel()
