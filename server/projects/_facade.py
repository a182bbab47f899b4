"""Projects as the servicer sees them: cached reads, invalidating writes, domain events.

Reads go through ``server.caching.CoherentCache`` (the sidecar, with the origin as the
fallback). A write commits the change together with its domain event (the event outbox),
then delivers the cache invalidations (the project's key, and every list page by a
namespace generation bump) within one bounded wait, then publishes the event, and only
then returns. The sequence after the commit runs to its end even when the caller goes
away (a cut deadline, a cancelled call): it is shielded from the request's cancellation.
An invalidation the sidecar did not take stays pending (this server then reads the
database only); an event the broker did not confirm stays in the outbox for the relay of
any replica. So a committed change always reaches every cache.

Every operation acts for a principal. Cached values are whole projects (owner and members
included), so a cached read is checked for reach exactly like a database read; list pages
are cached per viewer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from agentic.projects.v1 import projects_pb2

from core.cache import Invalidation, Namespace
from core.db import in_database_thread
from core.events import EventRelay, Outboxed
from core.rpc import NotFound, Unavailable
from server.access import owner_for, viewer_of
from server.auth import Principal
from server.caching import CoherentCache, CoherentWrites
from server.projects._store import DOMAIN, ProjectStore, project_not_found, reaches
from server.projects._wire import to_proto

log = logging.getLogger(__name__)

T = TypeVar("T")

PROJECTS_NAMESPACE = Namespace.PROJECTS
LISTS_NAMESPACE = Namespace.PROJECT_LISTS


def _unavailable() -> Unavailable:
    return Unavailable(
        "the project database is unavailable or timed out; try again",
        reason="DATABASE_UNAVAILABLE",
        domain=DOMAIN,
    )


def _invalidations(project_id: str | None) -> list[Invalidation]:
    # Every write can move projects between list pages; only updates and deletes can make
    # a cached project stale (a cached "not found" for a new id is dropped by its event).
    stale = [Invalidation(LISTS_NAMESPACE)]
    if project_id is not None:
        stale.append(Invalidation(PROJECTS_NAMESPACE, (project_id.encode(),)))
    return stale


class Projects:
    """Async operations on projects over a store, the coherent cache and the event relay."""

    def __init__(
        self,
        store: ProjectStore,
        executor: ThreadPoolExecutor,
        *,
        cache: CoherentCache,
        relay: EventRelay,
    ) -> None:
        self._store = store
        self._executor = executor
        self._cache = cache
        self._relay = relay
        self._writes = CoherentWrites(cache, relay, self._run)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await in_database_thread(
            self._executor, functools.partial(fn, *args, **kwargs), unavailable=_unavailable
        )

    async def _read(
        self, namespace: str, key: bytes, load: Callable[[], bytes | None], resource: str
    ) -> bytes | None:
        return await self._cache.read(
            namespace, key, functools.partial(self._run, load), resource=resource
        )

    async def _write(
        self, call: Callable[[], tuple[T, Outboxed]], invalidations: Sequence[Invalidation]
    ) -> T:
        def committed() -> tuple[T, list[Outboxed]]:
            value, event = call()
            return value, [event]

        return await self._writes.write(committed, invalidations)

    async def get(self, project_id: str, principal: Principal) -> projects_pb2.Project:
        """The project, from the cache when it holds it.

        NOT_FOUND when it does not exist or ``principal`` does not reach it.
        """

        def load() -> bytes | None:
            found = self._store.load(project_id)
            # None is cached as a negative entry, briefly.
            return None if found is None else found.SerializeToString()

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
        call = functools.partial(
            self._store.create,
            name=name,
            description=description,
            owner_id=owner_id,
            member_ids=member_ids,
        )
        return to_proto(await self._write(call, _invalidations(None)))

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
        call = functools.partial(
            self._store.update,
            project_id,
            fields,
            etag=etag,
            member_ids=member_ids,
            viewer=viewer_of(principal),
        )
        return to_proto(await self._write(call, _invalidations(project_id)))

    async def delete(self, project_id: str, *, etag: str, principal: Principal) -> None:
        """Delete; the cached project and list pages are invalidated before returning."""

        def call() -> tuple[None, Outboxed]:
            return None, self._store.delete(project_id, etag=etag, viewer=viewer_of(principal))

        await self._write(call, _invalidations(project_id))

    def start(self) -> None:
        """Start the background work of a serving server: redelivery and the event relay."""
        self._cache.start()
        self._relay.start()

    async def close(self) -> None:
        """Stop the background work (on shutdown; the outbox keeps what is left)."""
        await self._cache.close()
        await self._relay.stop()
