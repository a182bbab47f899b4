"""Removing the artifacts of deleted projects: their bytes, their rows, an event each.

DeleteProject removes the project's row and leaves its artifacts, whose bytes may be
large: this is where they go. An artifact is an orphan when no ``projects`` row has its
``project_id``. Project ids are random UUIDs that are never reused, so an orphan cannot
become an artifact of a live project again: no lock against a concurrent CreateProject
is needed, and an artifact of a project that exists is never picked.

A batch is a delete's two steps for up to ``batch_size`` artifacts: one transaction turns
them ``deleting`` with an ``artifact.deleted`` event each (the cache drops them, as on
DeleteArtifact; any upload stream loses its lease), then their bytes are removed, then a
second transaction removes the rows whose bytes went. A row whose bytes stayed (a store
error) remains ``deleting``: the expiry sweep finishes it on a later run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, exists, select
from sqlalchemy.orm import sessionmaker

from core import events
from core.artifacts._lifecycle import (
    DELETING,
    READY,
    deleting_values,
    remove_bytes,
    remove_rows,
    update_rows,
)
from core.db import ArtifactRow, ProjectRow
from core.objects import ObjectStore, ObjectStoreError

__all__ = ["OrphanReport", "delete_orphans"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OrphanReport:
    """What a removal of orphaned artifacts did."""

    deleted: int
    """Artifacts whose bytes and rows are gone."""
    bytes_freed: int
    """Their sizes (a READY artifact's size, an unfinished upload's committed bytes)."""
    failures: int
    """Artifacts whose bytes could not be removed (left ``deleting``, for the sweep)."""
    batches: int
    """Batches done (two transactions each)."""


def _ignore(_done: OrphanReport) -> None:
    return None


def delete_orphans(
    engine: Engine,
    objects: ObjectStore,
    *,
    batch_size: int = 100,
    max_batches: int = 1000,
    after_batch: Callable[[OrphanReport], None] = _ignore,
) -> OrphanReport:
    """Remove up to ``batch_size * max_batches`` artifacts of deleted projects.
    ``after_batch`` gets the running totals after each batch; an exception it raises
    stops the removal there (the batches before stay done)."""
    sessions = sessionmaker(engine)
    orphaned = and_(
        ArtifactRow.state != DELETING,
        ~exists().where(ProjectRow.id == ArtifactRow.project_id),
    )
    done = OrphanReport(0, 0, 0, 0)
    for _ in range(max_batches):
        now = datetime.now(UTC)
        with sessions.begin() as session:
            batch = session.execute(
                select(
                    ArtifactRow.id,
                    ArtifactRow.object_key,
                    ArtifactRow.store_state,
                    ArtifactRow.state,
                    ArtifactRow.version,
                    ArtifactRow.size_bytes,
                    ArtifactRow.committed_size,
                )
                .where(orphaned)
                .order_by(ArtifactRow.id)
                .limit(batch_size)
            ).all()
            marked = []
            for artifact_id, key, store_state, state, version, size, committed in batch:
                unchanged = and_(ArtifactRow.id == artifact_id, ArtifactRow.version == version)
                if update_rows(session, unchanged, **deleting_values(state, version, now)) != 1:
                    continue  # changed meanwhile (deleted by its owner): picked up next batch
                events.add(
                    session, events.DomainEvent(events.EventType.ARTIFACT_DELETED, artifact_id)
                )
                held = size if state == READY else committed
                marked.append((artifact_id, key, store_state, int(held or 0)))
        if not batch:
            break
        removed: list[str] = []
        freed = 0
        for artifact_id, key, store_state, size in marked:
            try:
                remove_bytes(objects, key, store_state)
            except ObjectStoreError:
                log.warning("bytes of orphaned artifact %s not removed", artifact_id, exc_info=True)
                continue
            removed.append(artifact_id)
            freed += size
        with sessions.begin() as session:
            remove_rows(session, removed)
        done = OrphanReport(
            deleted=done.deleted + len(removed),
            bytes_freed=done.bytes_freed + freed,
            failures=done.failures + len(marked) - len(removed),
            batches=done.batches + 1,
        )
        after_batch(done)
        if len(batch) < batch_size:
            break
    return done
