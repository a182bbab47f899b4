"""The states of an artifact row and the steps that end one, shared by the API server
(uploads, DeleteArtifact) and the cleanup that runs without it (the expiry sweep and the
retention kind's removal of artifacts of deleted projects).

A row is ``uploading`` until its upload finishes (``ready``) or fails (``failed``);
deleting is two steps, so a crash between them leaves work to finish rather than bytes
nobody knows of: the row turns ``deleting`` (invisible from then on; ``failure_reason``
keeps the state it had, which says what bytes there are), then the bytes go
(``remove_bytes``), then the row (``remove_rows``). The expiry sweep finishes deletions a
crash interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, update
from sqlalchemy.orm import Session

from core import events
from core.db import ArtifactRow, ArtifactWorkProductRow
from core.objects import ObjectStore

__all__ = [
    "DELETING",
    "FAILED",
    "READY",
    "UPLOADING",
    "deleting_values",
    "fail_upload",
    "lease_free",
    "remove_bytes",
    "remove_rows",
    "update_rows",
    "upload_ended",
]

UPLOADING = "uploading"
READY = "ready"
FAILED = "failed"
DELETING = "deleting"


def update_rows(session: Session, where: Any, **values: Any) -> int:
    """UPDATE the artifact rows ``where`` holds; how many rows changed (0: the condition
    was no longer true, e.g. a lease lost or a version moved on)."""
    result: Any = session.execute(
        update(ArtifactRow)
        .where(where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    # Session.execute is typed Result; DML hands back a CursorResult with rowcount.
    return int(result.rowcount)


def lease_free(now: datetime) -> Any:
    """SQL: no Write stream holds the row's upload (none ever did, or its lease lapsed)."""
    return or_(ArtifactRow.writer_id.is_(None), ArtifactRow.writer_expire_time < now)


def upload_ended(now: datetime) -> dict[str, Any]:
    """The values that close a row's upload (finished or failed) as a change of the artifact."""
    return {
        "store_state": "",
        "writer_id": None,
        "writer_expire_time": None,
        "expire_time": None,
        "update_time": now,
        "version": ArtifactRow.version + 1,
    }


def fail_upload(
    session: Session, artifact_id: str, reason: str, now: datetime, *also: Any
) -> events.Outboxed | None:
    """Mark an upload FAILED for ``reason`` (its committed bytes no longer count), with its
    ``artifact.updated`` event, in the caller's transaction; None when it is no longer
    UPLOADING (or a condition of ``also`` is not true)."""
    uploading = and_(ArtifactRow.id == artifact_id, ArtifactRow.state == UPLOADING, *also)
    failed = update_rows(
        session,
        uploading,
        state=FAILED,
        failure_reason=reason,
        committed_size=0,
        **upload_ended(now),
    )
    if failed != 1:
        return None
    return events.add(session, events.DomainEvent(events.EventType.ARTIFACT_UPDATED, artifact_id))


def deleting_values(former_state: str, version: int, now: datetime) -> dict[str, Any]:
    """The values of a delete's first step: the row turns ``deleting``, remembering the
    state it had (which bytes the last step must remove); any writer loses its lease."""
    return {
        "state": DELETING,
        "failure_reason": former_state,
        "update_time": now,
        "version": version + 1,
        "writer_id": None,
        "writer_expire_time": None,
    }


def remove_bytes(objects: ObjectStore, key: str, state: str) -> None:
    """Remove an artifact's object and any staged upload of it (ObjectStoreError when the
    store fails; nothing when there is nothing to remove)."""
    objects.delete(key)
    objects.abort_upload(key, state)


def remove_rows(session: Session, artifact_ids: Sequence[str]) -> None:
    """Last step of a delete, once the bytes are gone: the rows and their work products go
    (in the caller's transaction)."""
    if not artifact_ids:
        return
    ids = list(artifact_ids)
    session.execute(
        delete(ArtifactWorkProductRow).where(ArtifactWorkProductRow.artifact_id.in_(ids))
    )
    session.execute(delete(ArtifactRow).where(ArtifactRow.id.in_(ids)))
