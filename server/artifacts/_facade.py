"""Artifacts as the servicer sees them: cached reads, invalidating writes, byte streams.

GetArtifact reads through ``server.caching.CoherentCache`` (namespace ``artifacts``);
every change (created, finished, renamed, deleted) commits with its domain event and
invalidates the artifact's key before it returns (``CoherentWrites``), like projects. A
caller reaches an artifact when it reaches its project: anything else is NOT_FOUND. The
bytes never pass through the database or the cache: they stream between the client and
the object store in pieces of at most 1 MiB (``read``; ``Uploads`` for writes).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from agentic.artifacts.v1 import artifacts_pb2

from core.artifacts import remove_bytes
from core.cache import Namespace
from core.events import EventRelay, Outboxed
from core.objects import ObjectStore, object_key
from core.rpc import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OutOfRange,
    Unavailable,
)
from server.artifacts._store import (
    DOMAIN,
    ArtifactStore,
    artifact_not_found,
    new_id,
)
from server.artifacts._threads import Threads
from server.artifacts._uploads import ArtifactLimits, Uploads, stale_keys
from server.artifacts._wire import FORMATS, KINDS, STATES, to_proto, word
from server.auth import Principal
from server.caching import CoherentCache, CoherentWrites
from server.projects import project_not_found

__all__ = ["Artifacts"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_END = object()


def _not_ready(artifact_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"artifact {artifact_id} is not READY (its upload has not finished)",
        reason="ARTIFACT_NOT_READY",
        domain=DOMAIN,
        metadata={"id": artifact_id},
    )


class Artifacts:
    """Async operations on artifacts over the table, the object store and the cache."""

    def __init__(
        self,
        store: ArtifactStore,
        objects: ObjectStore,
        *,
        db: ThreadPoolExecutor,
        io: ThreadPoolExecutor,
        cache: CoherentCache,
        relay: EventRelay,
        limits: ArtifactLimits,
        project_reach: Callable[[str, Principal], Awaitable[bool]],
    ) -> None:
        self._store = store
        self._objects = objects
        self._threads = Threads(db=db, io=io)
        self._db = self._threads.db
        self._io = self._threads.io
        self._cache = cache
        self._limits = limits
        self._reach = project_reach
        self._writes = CoherentWrites(cache, relay, self._threads.run)
        self.uploads = Uploads(
            store,
            objects,
            threads=self._threads,
            writes=self._writes,
            limits=limits,
            project_reach=project_reach,
        )

    async def _check_project(self, project_id: str, principal: Principal) -> None:
        if not await self._reach(project_id, principal):
            raise project_not_found(project_id)

    # -- metadata ------------------------------------------------------------------------

    async def create_upload(
        self, request: artifacts_pb2.CreateUploadRequest, principal: Principal
    ) -> tuple[artifacts_pb2.Artifact, str]:
        """A new UPLOADING artifact and its upload name ``uploads/<uuid>``."""
        declared = request.size_bytes if request.HasField("size_bytes") else None
        if declared is not None and declared > self._limits.max_bytes:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "size_bytes",
                        f"must be at most {self._limits.max_bytes} (the maximum artifact size)",
                        "size_bytes.max",
                    )
                ],
                domain=DOMAIN,
            )
        await self._check_project(request.project_id, principal)
        limits = {"quota": self._limits.quota_bytes, "max_open": self._limits.max_open_uploads}
        await self._db(
            self._store.check_create,
            project_id=request.project_id,
            owner_id=principal.subject,
            declared_size=declared or 0,
            **limits,
        )
        artifact_id, upload_id = new_id(), new_id()
        key = object_key(request.project_id, artifact_id)
        state = await self._io(self._objects.begin_upload, key)

        def create() -> tuple[Any, list[Outboxed]]:
            artifact, event = self._store.create(
                artifact_id=artifact_id,
                upload_id=upload_id,
                project_id=request.project_id,
                owner_id=principal.subject,
                name=request.name,
                kind=word(KINDS, request.kind),
                content_type=request.content_type or "application/octet-stream",
                fmt=word(FORMATS, request.format),
                declared_size=declared,
                declared_sha256=request.sha256,
                work_products=list(request.work_products),
                store_state=state,
                expire_after_seconds=self._limits.expire_seconds,
                **limits,
            )
            return artifact, [event]

        try:
            artifact = await self._writes.write(create, stale_keys(artifact_id))
        except BaseException:
            await self._io(self._objects.abort_upload, key, state)
            raise
        return to_proto(artifact), f"uploads/{upload_id}"

    async def get(self, artifact_id: str, principal: Principal) -> artifacts_pb2.Artifact:
        """The artifact, from the cache when it holds it; NOT_FOUND out of reach."""

        def load() -> bytes | None:
            try:
                return to_proto(self._store.get(artifact_id)).SerializeToString()
            except NotFound:
                return None

        data = await self._cache.read(
            Namespace.ARTIFACTS,
            artifact_id.encode(),
            functools.partial(self._threads.run, load),
            resource="artifact",
        )
        if data is None:
            raise artifact_not_found(artifact_id)
        artifact = artifacts_pb2.Artifact.FromString(data)
        if not await self._reach(artifact.project_id, principal):
            raise artifact_not_found(artifact_id)  # the same answer as a missing artifact
        return artifact

    async def list(
        self, request: artifacts_pb2.ListArtifactsRequest, principal: Principal
    ) -> artifacts_pb2.ListArtifactsResponse:
        """One page of a project's artifacts (from the database)."""
        await self._check_project(request.project_id, principal)
        page = await self._db(
            self._store.page,
            project_id=request.project_id,
            page_size=request.page_size,
            page_token=request.page_token,
            kind=word(KINDS, request.kind),
            state=word(STATES, request.state),
            work_product=request.work_product,
        )
        return artifacts_pb2.ListArtifactsResponse(
            artifacts=[to_proto(a) for a in page.artifacts], next_page_token=page.next_page_token
        )

    async def update(
        self,
        artifact_id: str,
        *,
        etag: str,
        name: str | None,
        work_products: Sequence[str] | None,
        principal: Principal,
    ) -> artifacts_pb2.Artifact:
        """Rename and/or set the work products, conditionally on ``etag``."""
        await self.get(artifact_id, principal)  # NOT_FOUND out of reach

        def update() -> tuple[Any, list[Outboxed]]:
            artifact, event = self._store.update(
                artifact_id, etag=etag, name=name, work_products=work_products
            )
            return artifact, [event]

        return to_proto(await self._writes.write(update, stale_keys(artifact_id)))

    async def delete(self, artifact_id: str, *, etag: str, principal: Principal) -> None:
        """Delete the artifact, then its bytes (an unfinished upload's too)."""
        await self.get(artifact_id, principal)

        def mark() -> tuple[Any, list[Outboxed]]:
            artifact, event = self._store.mark_deleting(artifact_id, etag=etag)
            return artifact, [event]

        artifact = await self._writes.write(mark, stale_keys(artifact_id))
        state = await self._db(self._store.store_state, artifact_id)
        try:
            await self._io(remove_bytes, self._objects, artifact.object_key, state)
        except Unavailable:
            # The artifact is gone for everyone already; `python -m server.artifacts
            # expire` removes the bytes and the row once the store answers again.
            log.warning("artifact %s deleted, its bytes not yet", artifact_id)
            return
        await self._db(self._store.remove, artifact_id)

    async def reference(
        self, artifact_id: str, project_id: str, principal: Principal
    ) -> artifacts_pb2.ArtifactRef:
        """The claim check a task of ``project_id`` carries for a READY artifact of it."""
        artifact = await self.get(artifact_id, principal)
        if artifact.project_id != project_id:
            raise FailedPrecondition(
                f"artifact {artifact_id} belongs to another project than the task's",
                reason="ARTIFACT_IN_OTHER_PROJECT",
                domain=DOMAIN,
                metadata={"id": artifact_id, "project_id": artifact.project_id},
            )
        if artifact.state != artifacts_pb2.ARTIFACT_STATE_READY:
            raise _not_ready(artifact_id)
        return artifacts_pb2.ArtifactRef(
            artifact_id=artifact.id,
            object_key=object_key(artifact.project_id, artifact.id),
            size_bytes=artifact.size_bytes,
            sha256=artifact.sha256,
            format=artifact.format,
        )

    # -- bytes ---------------------------------------------------------------------------

    async def read(
        self, request: artifacts_pb2.ReadRequest, principal: Principal
    ) -> AsyncIterator[bytes]:
        """The bytes of a READY artifact from ``read_offset``, at most ``read_limit``."""
        artifact_id = request.resource_name.removeprefix("artifacts/")
        artifact = await self.get(artifact_id, principal)
        if artifact.state != artifacts_pb2.ARTIFACT_STATE_READY:
            raise _not_ready(artifact_id)
        if not 0 <= request.read_offset <= artifact.size_bytes:
            raise OutOfRange(
                f"read_offset {request.read_offset} is outside the artifact's "
                f"{artifact.size_bytes} bytes",
                reason="READ_OFFSET_OUT_OF_RANGE",
                domain=DOMAIN,
                metadata={"size_bytes": str(artifact.size_bytes)},
            )
        key = object_key(artifact.project_id, artifact.id)
        pieces: Iterator[bytes] = await self._io(
            self._objects.read, key, request.read_offset, request.read_limit
        )
        try:
            while True:
                piece = await self._io(next, pieces, _END)
                if piece is _END:
                    return
                yield piece
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                await self._io(close)
