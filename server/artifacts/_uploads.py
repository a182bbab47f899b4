"""ByteStream Write and QueryWriteStatus: an upload's bytes into the object store.

One Write stream holds its upload's writer lease (``ArtifactStore.claim``) from its first
message to its end. Bytes go to the object store's writer in the IO threads, hashed on
the way; whenever the store makes progress durable (a part, an fsync) the committed size
and the store's state are recorded in the database, which also renews the lease. When
the stream ends, however it ends (half-close, error, the client cancelling), what was
received is made durable and recorded before the lease is given up, in a task shielded
from the call's cancellation: a client resumes from ``QueryWriteStatus.committed_size``.
A killed server loses only what came after its last checkpoint, and its lease lapses
after ``upload_writer_lease_seconds``.

The sha256 of an upload is computed as its bytes arrive. The running hash stays in this
process between streams (keyed by upload and offset), so a stream resumed here continues
it; a stream resumed elsewhere (another replica, a restarted server) has none, and the
finished object is then hashed by reading it back before it may become READY.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agentic.artifacts.v1 import artifacts_pb2
from prometheus_client import Counter

from core.cache import Invalidation, Namespace
from core.objects import (
    ObjectMissingError,
    ObjectStore,
    StagingLostError,
    UploadWriter,
    sha256_of,
)
from core.rpc import (
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
)
from server.artifacts._store import (
    DOMAIN,
    ArtifactStore,
    Claim,
    UploadStatus,
    new_id,
    upload_not_found,
)
from server.artifacts._threads import Threads
from server.auth import Principal
from server.caching import CoherentWrites

__all__ = ["ArtifactLimits", "Uploads", "stale_keys"]

log = logging.getLogger(__name__)

T = TypeVar("T")

UPLOADED_BYTES = Counter(
    "agentic_artifact_uploaded_bytes_total", "Bytes received by ByteStream Write streams."
)
UPLOADS_FINISHED = Counter("agentic_artifact_uploads_finished_total", "Uploads that became READY.")

# Running hashes kept between streams; an entry is small (about 200 bytes).
_MAX_HASHES = 4096
# How long a new stream or a status query waits for this process's previous stream on the
# same upload to end and be recorded. A client that cut its stream and resumes at once
# often reaches the server before the server has seen the cut: waiting here answers it
# with the final committed size instead of ABORTED (a stream that really is still
# writing keeps its lease, and the newcomer gets ABORTED after this wait).
_SETTLE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ArtifactLimits:
    """The artifact limits of the server configuration."""

    max_bytes: int
    """Largest artifact."""
    quota_bytes: int
    """Artifact bytes per project."""
    lease_seconds: float
    """How long a Write stream's writer lease outlives its last sign of life."""
    max_open_uploads: int
    """Unfinished uploads per principal."""
    expire_seconds: float
    """An upload unfinished this long after its creation expires."""


def stale_keys(artifact_id: str) -> list[Invalidation]:
    """What a change of the artifact makes stale in the cache: its key."""
    return [Invalidation(Namespace.ARTIFACTS, (artifact_id.encode(),))]


def _bad(field: str, description: str, reason: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field, description, reason)], domain=DOMAIN)


def _offset_mismatch(got: int, expected: int) -> OutOfRange:
    return OutOfRange(
        f"write_offset {got} is not the next byte of the upload: expected {expected} "
        "(QueryWriteStatus gives the committed size to resume from)",
        reason="WRITE_OFFSET_MISMATCH",
        domain=DOMAIN,
        metadata={"expected_offset": str(expected), "write_offset": str(got)},
    )


def upload_id_of(resource_name: str) -> str:
    """The uuid of ``uploads/<uuid>`` (the proto rules checked the shape)."""
    return resource_name.removeprefix("uploads/")


class _Stream:
    """One Write stream's state: its claim, the store writer, the running hash."""

    def __init__(self, claim: Claim, hasher: Any | None) -> None:
        self.claim = claim
        self.writer: UploadWriter | None = None
        self.hasher = hasher
        self.received = claim.committed  # the next offset expected
        self.state = claim.store_state
        self.finished = False  # the object store published the bytes
        self.broken = False  # the store writer failed: nothing more to make durable
        self.renewed = time.monotonic()
        # A write the call's cancellation left running in its thread, and its length.
        self.writing: tuple[asyncio.Future[Any], int] | None = None
        self.quota_end: int | None = None  # undeclared size: the offset the quota allows


class Uploads:
    """Write and QueryWriteStatus over the artifact table and the object store."""

    def __init__(
        self,
        store: ArtifactStore,
        objects: ObjectStore,
        *,
        threads: Threads,
        writes: CoherentWrites,
        limits: ArtifactLimits,
        project_reach: Callable[[str, Principal], Awaitable[bool]],
    ) -> None:
        self._store = store
        self._objects = objects
        self._threads = threads
        self._db = threads.db
        self._writes = writes
        self._limits = limits
        self._reach = project_reach
        self._hashes: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        # Uploads with a stream in this process: done once the stream ended and its
        # committed size is recorded.
        self._streams: dict[str, asyncio.Future[None]] = {}
        self._orphans: set[asyncio.Task[None]] = set()  # releases of orphaned leases

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        # Staging lost or missing is for _open to judge; other store failures: UNAVAILABLE.
        passthrough = (StagingLostError, ObjectMissingError)
        return await self._threads.io(fn, *args, passthrough=passthrough)

    # -- who may write -------------------------------------------------------------------

    async def _owned(self, upload_id: str, principal: Principal) -> UploadStatus:
        """The upload's status if ``principal`` created it (or is an Administrator) and
        still reaches its project; NOT_FOUND otherwise."""
        status = await self._db(self._store.upload_status, upload_id)
        mine = principal.is_administrator or status.owner_id == principal.subject
        if not mine or not await self._reach(status.project_id, principal):
            raise upload_not_found(upload_id)
        return status

    async def _settled(self, upload_id: str) -> None:
        """Wait (bounded) until this process's stream on the upload, if any, is recorded."""
        stream = self._streams.get(upload_id)
        if stream is not None:
            await asyncio.wait({stream}, timeout=_SETTLE_SECONDS)

    async def query(self, resource_name: str, principal: Principal) -> tuple[int, bool]:
        """(committed size, complete) of an upload the caller may write."""
        upload_id = upload_id_of(resource_name)
        await self._settled(upload_id)
        status = await self._owned(upload_id, principal)
        return status.committed, status.complete

    # -- the Write stream ----------------------------------------------------------------

    async def write(
        self, requests: AsyncIterator[artifacts_pb2.WriteRequest], principal: Principal
    ) -> int:
        """Serve one Write stream; returns the committed size."""
        first = await anext(requests, None)
        if first is None or not first.resource_name:
            raise _bad(
                "resource_name",
                "the first message of a Write stream must name the upload",
                "resource_name.required",
            )
        upload_id = upload_id_of(first.resource_name)
        await self._settled(upload_id)
        await self._owned(upload_id, principal)
        claim = await self._claim(upload_id)
        stream = _Stream(claim, self._take_hash(upload_id, claim.committed))
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._streams[upload_id] = ended
        try:
            return await self._serve(stream, first, requests)
        finally:
            # Shielded from the call's cancellation; awaited by the next stream or status
            # query on this upload (_settled) through ``ended``.
            cleanup = asyncio.create_task(self._close(stream), context=contextvars.Context())
            cleanup.add_done_callback(lambda _: self._ended(upload_id, ended))
            await asyncio.shield(cleanup)

    async def _claim(self, upload_id: str) -> Claim:
        """Take the upload's writer lease; a lease taken for a call that was cancelled
        meanwhile (the client cut the stream at once) is released, not left to lapse."""
        claiming = asyncio.ensure_future(
            self._db(
                self._store.claim,
                upload_id,
                writer_id=new_id(),
                lease_seconds=self._limits.lease_seconds,
            )
        )
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            claiming.add_done_callback(self._release_orphan)
            raise

    def _release_orphan(self, claiming: asyncio.Future[Claim]) -> None:
        if claiming.cancelled() or claiming.exception() is not None:
            return
        claim = claiming.result()
        release = asyncio.create_task(
            self._db(self._store.release, claim), context=contextvars.Context()
        )
        self._orphans.add(release)
        release.add_done_callback(self._orphans.discard)

    async def _serve(
        self,
        stream: _Stream,
        first: artifacts_pb2.WriteRequest,
        requests: AsyncIterator[artifacts_pb2.WriteRequest],
    ) -> int:
        claim = stream.claim
        if first.write_offset != claim.committed:
            raise _offset_mismatch(first.write_offset, claim.committed)
        if claim.declared_size is None:
            # The project's other bytes as of now; concurrent uploads are caught at the
            # checkpoints (_check_quota).
            others = await self._db(self._store.usage, claim.project_id) - claim.committed
            stream.quota_end = self._limits.quota_bytes - others
        await self._open(stream)
        message: artifacts_pb2.WriteRequest | None = first
        while message is not None:
            if message.resource_name and upload_id_of(message.resource_name) != claim.upload_id:
                raise _bad(
                    "resource_name",
                    "every message of a Write stream must name the same upload",
                    "resource_name.changed",
                )
            if message.write_offset != stream.received:
                raise _offset_mismatch(message.write_offset, stream.received)
            if message.data:
                await self._append(stream, message.data)
            if message.finish_write:
                await self._finish(stream)
                extra = await anext(requests, None)
                if extra is not None:
                    raise _bad(
                        "finish_write",
                        f"the upload already finished with {stream.received} bytes; nothing "
                        "may follow finish_write",
                        "data_after_finish",
                    )
                return stream.received
            message = await anext(requests, None)
        return stream.received  # ended without finish_write: committed by _close

    async def _open(self, stream: _Stream) -> None:
        claim = stream.claim
        try:
            stream.writer = await self._io(
                self._objects.open_writer, claim.object_key, claim.committed, claim.store_state
            )
        except (ObjectMissingError, StagingLostError) as exc:
            if isinstance(exc, ObjectMissingError):
                size = await self._io(self._objects.size, claim.object_key)
                if size == claim.committed:
                    # A finish published the bytes but died before recording READY: only
                    # the finish is left to do (with the hash read back).
                    stream.finished = True
                    stream.hasher = None
                    return
            stream.broken = True
            reason = "its staged bytes were lost in the object store; create a new upload"
            await self._db(self._store.fail, claim.artifact_id, reason)
            raise FailedPrecondition(
                f"uploads/{claim.upload_id} cannot continue: {reason}",
                reason="UPLOAD_FAILED",
                domain=DOMAIN,
                metadata={"artifact_id": claim.artifact_id},
            ) from None

    async def _append(self, stream: _Stream, data: bytes) -> None:
        claim = stream.claim
        if stream.finished:
            raise _bad("data", "the upload is complete; only finish_write may follow", "finished")
        end = stream.received + len(data)
        if claim.declared_size is not None and end > claim.declared_size:
            raise OutOfRange(
                f"the upload was declared as {claim.declared_size} bytes; this message "
                f"would end at {end}",
                reason="SIZE_EXCEEDED",
                domain=DOMAIN,
                metadata={"size_bytes": str(claim.declared_size)},
            )
        if stream.quota_end is not None and end > stream.quota_end:
            raise ResourceExhausted(
                f"project {claim.project_id} would pass its quota of "
                f"{self._limits.quota_bytes} artifact bytes: delete artifacts, then resume "
                "this upload",
                reason="QUOTA_EXCEEDED",
                domain=DOMAIN,
            )
        if end > self._limits.max_bytes:
            raise ResourceExhausted(
                f"artifacts are at most {self._limits.max_bytes} bytes",
                reason="ARTIFACT_TOO_LARGE",
                domain=DOMAIN,
            )
        writer, hasher = stream.writer, stream.hasher
        assert writer is not None
        await self._renew_if_quiet(stream)

        def append() -> Any:
            if hasher is not None:
                hasher.update(data)
            return writer.write(data)

        # Shielded: a client that cuts its stream (the call is cancelled) while these bytes
        # are written leaves the write running in its thread; _close waits for it and keeps
        # what arrived, instead of taking the stream for broken and losing it.
        work = asyncio.ensure_future(self._io(append))
        stream.writing = (work, len(data))
        try:
            checkpoint = await asyncio.shield(work)
        except asyncio.CancelledError:
            raise
        except BaseException:
            stream.writing = None
            stream.broken = True
            stream.hasher = None
            raise
        stream.writing = None
        stream.received = end
        try:
            if checkpoint is not None:
                stream.state = checkpoint.state
                await self._record(stream, checkpoint.committed)
        finally:
            # Counted once a checkpoint these bytes completed is recorded too: a reader of
            # the counter (an operator, the resume tests) may take every counted byte up to
            # the last checkpoint as surviving a crash of this server. A stream cut while
            # that record ran is counted too: the bytes are received, and _close records
            # them with the stream's last checkpoint.
            UPLOADED_BYTES.inc(len(data))
        if checkpoint is not None and claim.declared_size is None:
            await self._check_quota(claim)

    async def _renew_if_quiet(self, stream: _Stream) -> None:
        """Renew the lease before touching the bytes when it was last renewed a third of a
        lease ago: a stream that was quiet for longer than its lease may have lost the
        upload to another stream, and the file store's writers share the staged file (and,
        once the other stream finished, the published object), so a write or a finish of
        this stream would change the other's bytes. ABORTED (UPLOAD_BUSY) when lost."""
        if time.monotonic() - stream.renewed > self._limits.lease_seconds / 3:
            assert stream.writer is not None
            await self._record(stream, stream.writer.committed)

    async def _record(self, stream: _Stream, committed: int) -> None:
        await self._db(
            self._store.checkpoint,
            stream.claim,
            committed=committed,
            store_state=stream.state,
            lease_seconds=self._limits.lease_seconds,
        )
        stream.renewed = time.monotonic()

    async def _check_quota(self, claim: Claim) -> None:
        used = await self._db(self._store.usage, claim.project_id)
        if used > self._limits.quota_bytes:
            raise ResourceExhausted(
                f"project {claim.project_id} holds {used} artifact bytes, over its quota of "
                f"{self._limits.quota_bytes}: delete artifacts, then resume this upload",
                reason="QUOTA_EXCEEDED",
                domain=DOMAIN,
            )

    async def _finish(self, stream: _Stream) -> None:
        claim = stream.claim
        declared = claim.declared_size
        if declared is not None and stream.received != declared:
            raise FailedPrecondition(
                f"the upload holds {stream.received} bytes, {declared} were declared: write "
                "the rest from committed_size, then finish again",
                reason="SIZE_MISMATCH",
                domain=DOMAIN,
                metadata={"committed_size": str(stream.received), "size_bytes": str(declared)},
            )
        if not stream.finished:
            assert stream.writer is not None
            await self._renew_if_quiet(stream)
            await self._io(stream.writer.finish)
            stream.finished = True
        if stream.hasher is not None:
            size, digest = stream.received, stream.hasher.hexdigest()
        else:
            size, digest = await self._io(sha256_of, self._objects, claim.object_key)
        stream.hasher = None
        if size != stream.received or (claim.declared_sha256 and digest != claim.declared_sha256):
            await self._start_over(stream)
            raise DataLoss(
                f"the {size} bytes received hash to sha256 {digest}, not the declared "
                f"{claim.declared_sha256 or '(size ' + str(stream.received) + ')'}: the upload "
                "was reset to 0 bytes; write it again from offset 0",
                reason="SHA256_MISMATCH",
                domain=DOMAIN,
                metadata={"expected_sha256": claim.declared_sha256, "actual_sha256": digest},
            )
        await self._writes.write(
            lambda: self._committed_ready(claim, size, digest),
            stale_keys(claim.artifact_id),
        )
        UPLOADS_FINISHED.inc()

    def _committed_ready(self, claim: Claim, size: int, digest: str) -> tuple[None, list[Any]]:
        _, event = self._store.complete(claim, size=size, sha256=digest)
        return None, [event]

    async def _start_over(self, stream: _Stream) -> None:
        claim = stream.claim
        await self._io(self._objects.delete, claim.object_key)
        state = await self._io(self._objects.begin_upload, claim.object_key)
        await self._db(self._store.reset, claim, store_state=state)
        stream.received = 0

    # -- the end of a stream -------------------------------------------------------------

    async def _close(self, stream: _Stream) -> None:
        """Make what the stream received durable, record it, give the lease up."""
        claim = stream.claim
        try:
            if stream.writing is not None:  # the stream was cut mid-write
                work, size = stream.writing
                stream.writing = None
                try:
                    await work
                except Exception:
                    stream.broken = True
                    stream.hasher = None
                else:
                    stream.received += size
                    UPLOADED_BYTES.inc(size)
            writer = stream.writer
            try:
                if writer is not None and not stream.finished and not stream.broken:
                    checkpoint = await self._io(writer.checkpoint)
                    stream.state = checkpoint.state
                    await self._record(stream, checkpoint.committed)
                    if stream.hasher is not None and checkpoint.committed == stream.received:
                        self._keep_hash(claim.upload_id, checkpoint.committed, stream.hasher)
            finally:
                if writer is not None:
                    # Also a broken or finished writer: its file, or the S3 part it may
                    # still be sending, is done with before the lease is given up.
                    await self._io(writer.close)
            await self._db(self._store.release, claim)
        except Exception:
            log.warning(
                "closing the Write stream of uploads/%s failed", claim.upload_id, exc_info=True
            )

    def _ended(self, upload_id: str, ended: asyncio.Future[None]) -> None:
        ended.set_result(None)
        if self._streams.get(upload_id) is ended:
            del self._streams[upload_id]

    def _take_hash(self, upload_id: str, offset: int) -> Any | None:
        """The running hash of the upload if this process holds it at ``offset``."""
        kept = self._hashes.pop(upload_id, None)
        if offset == 0:
            return hashlib.sha256()
        if kept is not None and kept[0] == offset:
            return kept[1]
        return None

    def _keep_hash(self, upload_id: str, offset: int, hasher: Any) -> None:
        self._hashes[upload_id] = (offset, hasher)
        self._hashes.move_to_end(upload_id)
        while len(self._hashes) > _MAX_HASHES:
            self._hashes.popitem(last=False)
