"""Artifact storage in the relational database: metadata, uploads and their progress.

Plain synchronous code that knows nothing about gRPC or the object store's bytes; the
facade runs it in the database threads. The database is the gate of visibility: an
artifact is readable only once its row says ``ready``, so bytes the object store holds
for an unfinished or failed upload are never served.

An upload is written by one stream at a time: a stream first claims the upload's writer
lease (``writer_id`` until ``writer_expire_time``), and every later step (a checkpoint,
the finish) is conditional on still holding it, so two streams never interleave bytes
and a stream whose lease was taken over stops at its next step.

Deleting is two steps, so a crash between them leaves work to finish rather than bytes
nobody knows of: the row turns ``deleting`` (invisible from then on) and is removed once
the bytes are; ``core.artifacts.sweep`` finishes deletions a crash interrupted.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, delete, insert, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from core import events
from core.artifacts import (
    DELETING,
    FAILED,
    READY,
    UPLOADING,
    deleting_values,
    fail_upload,
    lease_free,
    remove_rows,
    update_rows,
    upload_ended,
)
from core.db import ArtifactRow, ArtifactWorkProductRow, utc
from core.objects import object_key
from core.rpc import Aborted, FailedPrecondition, NotFound, ResourceExhausted
from server import paging as _paging
from server.artifacts import _limits

__all__ = [
    "DOMAIN",
    "Artifact",
    "ArtifactStore",
    "Claim",
    "Page",
    "UploadStatus",
    "artifact_not_found",
    "upload_not_found",
]

DOMAIN = "agentic.artifacts.v1"
DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class Artifact:
    """An artifact as stored (kind, state and format as the lower-case words of the table)."""

    id: str
    project_id: str
    owner_id: str
    name: str
    kind: str
    content_type: str
    format: str
    state: str
    size_bytes: int
    sha256: str
    object_key: str
    work_products: tuple[str, ...]
    create_time: datetime
    update_time: datetime
    expire_time: datetime | None
    failure_reason: str
    etag: str


@dataclass(frozen=True, slots=True)
class Claim:
    """An upload's writer lease, held by one Write stream, and where the upload stands."""

    upload_id: str
    writer_id: str
    artifact_id: str
    project_id: str
    object_key: str
    committed: int
    store_state: str
    declared_size: int | None
    declared_sha256: str


@dataclass(frozen=True, slots=True)
class UploadStatus:
    """QueryWriteStatus: committed bytes, whether it finished, and who owns the upload."""

    committed: int
    complete: bool
    owner_id: str
    project_id: str


@dataclass(frozen=True, slots=True)
class Page:
    """One page of artifacts and the token for the next one ("" when last)."""

    artifacts: list[Artifact]
    next_page_token: str


def etag_of(artifact_id: str, version: int) -> str:
    """Opaque etag: clients compare it, never parse it."""
    return hashlib.sha256(f"artifact:{artifact_id}:{version}".encode()).hexdigest()[:20]


def _to_artifact(row: ArtifactRow, work_products: Sequence[str]) -> Artifact:
    ready = row.state == READY
    return Artifact(
        id=row.id,
        project_id=row.project_id,
        owner_id=row.owner_id,
        name=row.name,
        kind=row.kind,
        content_type=row.content_type,
        format=row.format,
        state=row.state,
        size_bytes=row.size_bytes if ready else (row.declared_size or 0),
        sha256=row.sha256 if ready else row.declared_sha256,
        object_key=row.object_key,
        work_products=tuple(sorted(work_products)),
        create_time=utc(row.create_time),
        update_time=utc(row.update_time),
        expire_time=utc(row.expire_time) if row.expire_time and row.state == UPLOADING else None,
        failure_reason=row.failure_reason,
        etag=etag_of(row.id, row.version),
    )


def artifact_not_found(artifact_id: str) -> NotFound:
    """NOT_FOUND for an artifact id (also for one out of the caller's reach)."""
    return NotFound(
        f"artifact {artifact_id} not found",
        reason="ARTIFACT_NOT_FOUND",
        domain=DOMAIN,
        metadata={"id": artifact_id},
    )


def upload_not_found(upload_id: str) -> NotFound:
    """NOT_FOUND for an upload name (also for another principal's upload)."""
    return NotFound(
        f"upload uploads/{upload_id} not found",
        reason="UPLOAD_NOT_FOUND",
        domain=DOMAIN,
        metadata={"resource_name": f"uploads/{upload_id}"},
    )


def _busy(upload_id: str) -> Aborted:
    return Aborted(
        f"another Write stream holds uploads/{upload_id}; wait for it to end, then "
        "QueryWriteStatus and resume from committed_size",
        reason="UPLOAD_BUSY",
        domain=DOMAIN,
        metadata={"resource_name": f"uploads/{upload_id}"},
    )


def _stale(artifact_id: str) -> Aborted:
    return Aborted(
        f"artifact {artifact_id} changed since the etag was read; read it again and retry",
        reason="ETAG_MISMATCH",
        domain=DOMAIN,
        metadata={"id": artifact_id},
    )


def _event(session: Session, kind: events.EventType, artifact_id: str) -> events.Outboxed:
    return events.add(session, events.DomainEvent(kind, artifact_id))


def _work_products(session: Session, ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        rows = session.execute(
            select(ArtifactWorkProductRow.artifact_id, ArtifactWorkProductRow.work_product).where(
                ArtifactWorkProductRow.artifact_id.in_(ids)
            )
        )
        for artifact_id, work_product in rows:
            found[artifact_id].append(work_product)
    return found


def _set_work_products(session: Session, artifact_id: str, work_products: Sequence[str]) -> None:
    session.execute(
        delete(ArtifactWorkProductRow).where(ArtifactWorkProductRow.artifact_id == artifact_id)
    )
    rows = [{"artifact_id": artifact_id, "work_product": w} for w in sorted(set(work_products))]
    if rows:
        session.execute(insert(ArtifactWorkProductRow), rows)


def _unchanged(row: ArtifactRow) -> Any:
    """SQL: the artifact still has the version ``row`` was read at (optimistic concurrency)."""
    return and_(ArtifactRow.id == row.id, ArtifactRow.version == row.version)


class ArtifactStore:
    """Artifact rows and their uploads on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # -- creating --------------------------------------------------------------------------

    def check_create(
        self, *, project_id: str, owner_id: str, declared_size: int, quota: int, max_open: int
    ) -> None:
        """RESOURCE_EXHAUSTED if an upload of ``declared_size`` bytes would pass the
        project's quota or ``owner_id`` already has ``max_open`` unfinished uploads."""
        with self._sessions() as session:
            self._check_limits(session, project_id, owner_id, declared_size, quota, max_open)

    @staticmethod
    def _check_limits(
        session: Session,
        project_id: str,
        owner_id: str,
        declared_size: int,
        quota: int,
        max_open: int,
    ) -> None:
        open_uploads = _limits.open_uploads(session, owner_id)
        if open_uploads >= max_open:
            raise ResourceExhausted(
                f"you have {open_uploads} unfinished uploads, the most allowed; finish or "
                "delete one first",
                reason="TOO_MANY_OPEN_UPLOADS",
                domain=DOMAIN,
            )
        used = _limits.usage(session, project_id)
        if used + declared_size > quota:
            raise ResourceExhausted(
                f"project {project_id} holds {used} artifact bytes; {declared_size} more would "
                f"pass its quota of {quota}: delete artifacts first",
                reason="QUOTA_EXCEEDED",
                domain=DOMAIN,
            )

    def usage(self, project_id: str) -> int:
        """Artifact bytes the project holds: ready sizes plus open uploads' declared or
        committed sizes (whichever is larger)."""
        with self._sessions() as session:
            return _limits.usage(session, project_id)

    def create(
        self,
        *,
        artifact_id: str,
        upload_id: str,
        project_id: str,
        owner_id: str,
        name: str,
        kind: str,
        content_type: str,
        fmt: str,
        declared_size: int | None,
        declared_sha256: str,
        work_products: Sequence[str],
        store_state: str,
        expire_after_seconds: float,
        quota: int,
        max_open: int,
    ) -> tuple[Artifact, events.Outboxed]:
        """Insert an UPLOADING artifact whose upload the object store has begun.

        The limits are checked again, under the lock that makes concurrent creates of
        the project or the principal take turns (``_limits``), in the transaction that
        inserts (RESOURCE_EXHAUSTED).
        """
        now = datetime.now(UTC)
        row = ArtifactRow(
            id=artifact_id,
            project_id=project_id,
            owner_id=owner_id,
            name=name,
            kind=kind,
            content_type=content_type,
            format=fmt,
            state=UPLOADING,
            declared_size=declared_size,
            declared_sha256=declared_sha256,
            size_bytes=0,
            sha256="",
            object_key=object_key(project_id, artifact_id),
            upload_id=upload_id,
            committed_size=0,
            store_state=store_state,
            expire_time=now + timedelta(seconds=expire_after_seconds),
            failure_reason="",
            create_time=now,
            update_time=now,
            version=1,
        )
        with self._sessions.begin() as session:
            _limits.lock_for_create(session, project_id=project_id, owner_id=owner_id)
            self._check_limits(session, project_id, owner_id, declared_size or 0, quota, max_open)
            session.add(row)
            session.flush()
            _set_work_products(session, artifact_id, work_products)
            event = _event(session, events.EventType.ARTIFACT_CREATED, artifact_id)
        return _to_artifact(row, work_products), event

    # -- reading ---------------------------------------------------------------------------

    def get(self, artifact_id: str) -> Artifact:
        """The artifact, whoever may see it (the facade checks the project's reach)."""
        with self._sessions() as session:
            row = session.get(ArtifactRow, artifact_id)
            if row is None or row.state == DELETING:
                raise artifact_not_found(artifact_id)
            return _to_artifact(row, _work_products(session, [artifact_id])[artifact_id])

    def page(
        self,
        *,
        project_id: str,
        page_size: int,
        page_token: str,
        kind: str,
        state: str,
        work_product: str,
    ) -> Page:
        """A page, newest first, of the project's artifacts matching the filter."""
        size = page_size or DEFAULT_PAGE_SIZE
        filter_key = self.filter_key(project_id, kind, state, work_product)
        cursor = _paging.decode(page_token, filter_key)
        query = select(ArtifactRow).where(
            ArtifactRow.project_id == project_id, ArtifactRow.state != DELETING
        )
        if kind:
            query = query.where(ArtifactRow.kind == kind)
        if state:
            query = query.where(ArtifactRow.state == state)
        if work_product:
            query = query.where(
                ArtifactRow.id.in_(
                    select(ArtifactWorkProductRow.artifact_id).where(
                        ArtifactWorkProductRow.work_product == work_product
                    )
                )
            )
        if cursor is not None:
            query = query.where(
                tuple_(ArtifactRow.create_time, ArtifactRow.id) < (cursor.create_time, cursor.id)
            )
        query = query.order_by(ArtifactRow.create_time.desc(), ArtifactRow.id.desc())
        with self._sessions() as session:
            rows = list(session.scalars(query.limit(size + 1)))
            more = len(rows) > size
            rows = rows[:size]
            products = _work_products(session, [r.id for r in rows])
        token = ""
        if more:
            last = rows[-1]
            token = _paging.encode(
                _paging.Cursor(create_time=utc(last.create_time), id=last.id), filter_key
            )
        return Page([_to_artifact(r, products[r.id]) for r in rows], token)

    @staticmethod
    def filter_key(project_id: str, kind: str, state: str, work_product: str) -> str:
        """What a page token of ListArtifacts is bound to."""
        return f"artifacts;project={project_id};kind={kind};state={state};wp={work_product}"

    def upload_status(self, upload_id: str) -> UploadStatus:
        """Where an upload stands; NOT_FOUND when there is none (or it was deleted)."""
        with self._sessions() as session:
            row = session.scalar(select(ArtifactRow).where(ArtifactRow.upload_id == upload_id))
            if row is None or row.state == DELETING:
                raise upload_not_found(upload_id)
            return UploadStatus(
                committed=row.size_bytes if row.state == READY else row.committed_size,
                complete=row.state == READY,
                owner_id=row.owner_id,
                project_id=row.project_id,
            )

    # -- writing an upload -----------------------------------------------------------------

    def claim(self, upload_id: str, *, writer_id: str, lease_seconds: float) -> Claim:
        """Take the writer lease of an UPLOADING upload for one Write stream.

        NOT_FOUND (no such upload), FAILED_PRECONDITION (finished, or failed), ABORTED
        (another stream holds the lease). The caller checks ownership before.
        """
        now = datetime.now(UTC)
        with self._sessions.begin() as session:
            row = session.scalar(select(ArtifactRow).where(ArtifactRow.upload_id == upload_id))
            if row is None or row.state == DELETING:
                raise upload_not_found(upload_id)
            if row.state == READY:
                raise FailedPrecondition(
                    f"uploads/{upload_id} is finished: artifact {row.id} is READY with "
                    f"{row.size_bytes} bytes; create a new upload to store other bytes",
                    reason="UPLOAD_COMPLETE",
                    domain=DOMAIN,
                    metadata={"artifact_id": row.id, "committed_size": str(row.size_bytes)},
                )
            if row.state == FAILED:
                raise FailedPrecondition(
                    f"uploads/{upload_id} failed ({row.failure_reason}); create a new upload",
                    reason="UPLOAD_FAILED",
                    domain=DOMAIN,
                    metadata={"artifact_id": row.id},
                )
            free = and_(
                ArtifactRow.upload_id == upload_id,
                ArtifactRow.state == UPLOADING,
                lease_free(now),
            )
            expire = now + timedelta(seconds=lease_seconds)
            if update_rows(session, free, writer_id=writer_id, writer_expire_time=expire) != 1:
                raise _busy(upload_id)
            return Claim(
                upload_id=upload_id,
                writer_id=writer_id,
                artifact_id=row.id,
                project_id=row.project_id,
                object_key=row.object_key,
                committed=row.committed_size,
                store_state=row.store_state,
                declared_size=row.declared_size,
                declared_sha256=row.declared_sha256,
            )

    def _held(self, claim: Claim) -> Any:
        return and_(
            ArtifactRow.upload_id == claim.upload_id,
            ArtifactRow.state == UPLOADING,
            ArtifactRow.writer_id == claim.writer_id,
        )

    def checkpoint(
        self, claim: Claim, *, committed: int, store_state: str, lease_seconds: float
    ) -> None:
        """Record durable progress and renew the lease; ABORTED when the lease was lost."""
        expire = datetime.now(UTC) + timedelta(seconds=lease_seconds)
        with self._sessions.begin() as session:
            held = update_rows(
                session,
                self._held(claim),
                committed_size=committed,
                store_state=store_state,
                writer_expire_time=expire,
            )
            if held != 1:
                raise _busy(claim.upload_id)

    def release(self, claim: Claim) -> None:
        """Give the lease up (the stream ended); nothing when it was already lost."""
        with self._sessions.begin() as session:
            update_rows(session, self._held(claim), writer_id=None, writer_expire_time=None)

    def complete(self, claim: Claim, *, size: int, sha256: str) -> tuple[Artifact, events.Outboxed]:
        """Make the artifact READY with its verified size and sha256 (the bytes are in
        place); ABORTED when the lease was lost."""
        now = datetime.now(UTC)
        with self._sessions.begin() as session:
            ready = update_rows(
                session,
                self._held(claim),
                state=READY,
                size_bytes=size,
                sha256=sha256,
                committed_size=size,
                **upload_ended(now),
            )
            if ready != 1:
                raise _busy(claim.upload_id)
            event = _event(session, events.EventType.ARTIFACT_UPDATED, claim.artifact_id)
            row = session.get(ArtifactRow, claim.artifact_id)
            assert row is not None
            session.refresh(row)
            return _to_artifact(row, _work_products(session, [row.id])[row.id]), event

    def reset(self, claim: Claim, *, store_state: str) -> None:
        """Start the upload over at 0 bytes (its bytes did not hash as declared)."""
        with self._sessions.begin() as session:
            update_rows(session, self._held(claim), committed_size=0, store_state=store_state)

    # -- changing and deleting -------------------------------------------------------------

    def _current(self, session: Session, artifact_id: str, etag: str) -> ArtifactRow:
        row = session.get(ArtifactRow, artifact_id)
        if row is None or row.state == DELETING:
            raise artifact_not_found(artifact_id)
        if etag and etag != etag_of(row.id, row.version):
            raise _stale(artifact_id)
        return row

    def update(
        self,
        artifact_id: str,
        *,
        etag: str,
        name: str | None,
        work_products: Sequence[str] | None,
    ) -> tuple[Artifact, events.Outboxed]:
        """Set the name and/or the work products; ABORTED when ``etag`` is stale,
        FAILED_PRECONDITION for work products on a dataset."""
        with self._sessions.begin() as session:
            row = self._current(session, artifact_id, etag)
            if work_products and row.kind != "document":
                raise FailedPrecondition(
                    "only documents name work products; this artifact is a dataset",
                    reason="NOT_A_DOCUMENT",
                    domain=DOMAIN,
                    metadata={"id": artifact_id},
                )
            values: dict[str, object] = {
                "update_time": datetime.now(UTC),
                "version": row.version + 1,
            }
            if name is not None:
                values["name"] = name
            if update_rows(session, _unchanged(row), **values) != 1:
                raise _stale(artifact_id)
            if work_products is not None:
                _set_work_products(session, artifact_id, work_products)
            event = _event(session, events.EventType.ARTIFACT_UPDATED, artifact_id)
            session.refresh(row)
            return _to_artifact(row, _work_products(session, [artifact_id])[artifact_id]), event

    def mark_deleting(self, artifact_id: str, *, etag: str) -> tuple[Artifact, events.Outboxed]:
        """First step of a delete: the artifact disappears (its bytes are removed next)."""
        with self._sessions.begin() as session:
            row = self._current(session, artifact_id, etag)
            artifact = _to_artifact(row, ())
            now = datetime.now(UTC)
            deleting = update_rows(
                session, _unchanged(row), **deleting_values(row.state, row.version, now)
            )
            if deleting != 1:
                raise _stale(artifact_id)
            return artifact, _event(session, events.EventType.ARTIFACT_DELETED, artifact_id)

    def fail(self, artifact_id: str, reason: str) -> events.Outboxed | None:
        """Mark an upload FAILED (its bytes were lost); None when it is no longer UPLOADING."""
        with self._sessions.begin() as session:
            return fail_upload(session, artifact_id, reason, datetime.now(UTC))

    def store_state(self, artifact_id: str) -> str:
        """The store's bookkeeping of a (deleting) upload, to abort it."""
        with self._sessions() as session:
            row = session.get(ArtifactRow, artifact_id)
            return "" if row is None else row.store_state

    def remove(self, artifact_id: str) -> None:
        """Last step of a delete, once the bytes are gone: the row goes."""
        with self._sessions.begin() as session:
            remove_rows(session, [artifact_id])


def new_id() -> str:
    """A random UUID (artifact ids and upload names)."""
    return str(uuid.uuid4())
