"""The sweep of uploads that never finished, and of deletions a crash interrupted.

An upload not finished ``upload_expire_seconds`` after CreateUpload turns FAILED (its
reason says it expired) and its bytes are removed; a row left ``deleting`` by a crash
between the two steps of DeleteArtifact loses its bytes and then the row. Work goes in
bounded batches. Events go to the outbox with each change, so the caches of every
replica learn of it through any server's relay. ``python -m server.artifacts expire``
runs it; a scheduled job will.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.objects import ObjectStore, ObjectStoreError
from server.artifacts._facade import remove_bytes
from server.artifacts._store import ArtifactStore

__all__ = ["SweepReport", "sweep"]

log = logging.getLogger(__name__)

EXPIRED_REASON = "the upload expired before it finished; create a new upload"
# A deletion this old is no longer in progress: its request died.
_DELETION_GRACE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did."""

    expired_uploads: int
    finished_deletions: int
    failures: int


def sweep(
    store: ArtifactStore,
    objects: ObjectStore,
    *,
    now: datetime | None = None,
    batch_size: int = 100,
    max_batches: int = 100,
) -> SweepReport:
    """Expire overdue uploads and finish interrupted deletions, at most
    ``batch_size * max_batches`` of each."""
    now = now or datetime.now(UTC)
    expired = finished = failures = 0
    for _ in range(max_batches):
        batch = store.expired_uploads(now, batch_size)
        for artifact_id, key, state in batch:
            if store.fail(artifact_id, EXPIRED_REASON) is None:
                continue  # finished or deleted meanwhile
            try:
                objects.abort_upload(key, state)
                expired += 1
            except ObjectStoreError:
                failures += 1
                log.warning("bytes of expired upload %s not removed", artifact_id, exc_info=True)
        if len(batch) < batch_size:
            break
    for _ in range(max_batches):
        batch_d = store.stale_deletions(now - _DELETION_GRACE, batch_size)
        for artifact_id, key, state, _former in batch_d:
            try:
                remove_bytes(objects, key, state)
            except ObjectStoreError:
                failures += 1
                log.warning("bytes of deleted artifact %s not removed", artifact_id, exc_info=True)
                continue
            store.remove(artifact_id)
            finished += 1
        if len(batch_d) < batch_size:
            break
    return SweepReport(expired, finished, failures)
