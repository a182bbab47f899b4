"""The sweep of uploads that never finished, and of deletions a crash interrupted.

An upload not finished by its ``expire_time`` (CreateUpload's plus the server's
``upload_expire_seconds``) whose lease no Write stream holds turns FAILED (its reason
says it expired) and its staged bytes are removed; a row left ``deleting`` by a crash
between the steps of a delete loses its bytes and then the row. Work goes in bounded
batches of one transaction each. Events go to the outbox with each change, so the caches
of every replica learn of it through any server's relay. ``python -m server.artifacts
expire`` and the retention kind run it.

Store errors are counted, never raised: an expired upload whose staged bytes stayed is
FAILED all the same (the next sweep does not see it again; a bucket lifecycle rule on
S3's multipart uploads is the backstop), a deletion whose bytes stayed is tried again by
the next sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from core.artifacts._lifecycle import (
    DELETING,
    READY,
    UPLOADING,
    fail_upload,
    lease_free,
    remove_bytes,
    remove_rows,
)
from core.db import ArtifactRow
from core.objects import ObjectStore, ObjectStoreError

__all__ = ["EXPIRED_REASON", "SweepReport", "sweep"]

log = logging.getLogger(__name__)

EXPIRED_REASON = "the upload expired before it finished; create a new upload"
# A deletion this old is no longer in progress: its request died.
DELETION_GRACE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did."""

    expired_uploads: int
    finished_deletions: int
    failures: int
    bytes_freed: int = 0
    """Committed bytes of the expired uploads and sizes of the finished deletions."""
    batches: int = 0
    """Transactions that changed rows."""


def _ignore(_done: SweepReport) -> None:
    return None


def sweep(
    engine: Engine,
    objects: ObjectStore,
    *,
    now: datetime | None = None,
    batch_size: int = 100,
    max_batches: int = 100,
    after_batch: Callable[[SweepReport], None] = _ignore,
) -> SweepReport:
    """Expire overdue uploads and finish interrupted deletions, at most
    ``batch_size * max_batches`` of each. ``after_batch`` gets the running totals after
    each batch; an exception it raises stops the sweep there."""
    now = now or datetime.now(UTC)
    sessions = sessionmaker(engine)
    done = SweepReport(0, 0, 0)
    for _ in range(max_batches):
        with sessions.begin() as session:
            batch = session.execute(
                select(
                    ArtifactRow.id,
                    ArtifactRow.object_key,
                    ArtifactRow.store_state,
                    ArtifactRow.committed_size,
                )
                .where(
                    ArtifactRow.state == UPLOADING,
                    ArtifactRow.expire_time < now,
                    lease_free(now),
                )
                .order_by(ArtifactRow.expire_time)
                .limit(batch_size)
            ).all()
            failed = []
            for artifact_id, key, state, committed in batch:
                # Lease free again: a stream may have taken the upload since the pick.
                at = datetime.now(UTC)  # the row's update_time: the clock's, even with a given now
                if fail_upload(session, artifact_id, EXPIRED_REASON, at, lease_free(now)):
                    failed.append((artifact_id, key, state, int(committed or 0)))
        if not batch:
            break
        expired = freed = failures = 0
        for artifact_id, key, state, committed in failed:
            try:
                objects.abort_upload(key, state)
            except ObjectStoreError:
                failures += 1
                log.warning("bytes of expired upload %s not removed", artifact_id, exc_info=True)
                continue
            expired += 1
            freed += committed
        done = replace(
            done,
            expired_uploads=done.expired_uploads + expired,
            failures=done.failures + failures,
            bytes_freed=done.bytes_freed + freed,
            batches=done.batches + 1,
        )
        after_batch(done)
        if len(batch) < batch_size:
            break
    return _finish_deletions(sessions, objects, now, batch_size, max_batches, done, after_batch)


def _finish_deletions(
    sessions: sessionmaker,  # type: ignore[type-arg]
    objects: ObjectStore,
    now: datetime,
    batch_size: int,
    max_batches: int,
    done: SweepReport,
    after_batch: Callable[[SweepReport], None],
) -> SweepReport:
    """Remove the bytes, then the rows, of deletions older than DELETION_GRACE; a row
    whose bytes stayed is left for the next sweep (and not picked again by this one)."""
    stuck: list[str] = []
    for _ in range(max_batches):
        with sessions() as session:
            batch = session.execute(
                select(
                    ArtifactRow.id,
                    ArtifactRow.object_key,
                    ArtifactRow.store_state,
                    ArtifactRow.failure_reason,
                    ArtifactRow.size_bytes,
                    ArtifactRow.committed_size,
                )
                .where(
                    ArtifactRow.state == DELETING,
                    ArtifactRow.update_time < now - DELETION_GRACE,
                    ArtifactRow.id.not_in(stuck),
                )
                .limit(batch_size)
            ).all()
        if not batch:
            break
        removed: list[str] = []
        freed = 0
        for artifact_id, key, state, former, size, committed in batch:
            try:
                remove_bytes(objects, key, state)
            except ObjectStoreError:
                stuck.append(artifact_id)
                log.warning("bytes of deleted artifact %s not removed", artifact_id, exc_info=True)
                continue
            removed.append(artifact_id)
            freed += int((size if former == READY else committed) or 0)
        with sessions.begin() as session:
            remove_rows(session, removed)
        done = replace(
            done,
            finished_deletions=done.finished_deletions + len(removed),
            failures=done.failures + len(batch) - len(removed),
            bytes_freed=done.bytes_freed + freed,
            batches=done.batches + 1,
        )
        after_batch(done)
        if len(batch) < batch_size:
            break
    return done
