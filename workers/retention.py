"""The retention kind: delete, in bounded batches, what the service no longer keeps.

Three steps, each the shared code the server's commands run too, so there is one
implementation of each deletion:

1. terminal tasks last changed before the cutoff, with their events and their
   idempotency records (a task's ``request_id``): ``core.tasks.purge_tasks``, as
   PurgeTasks does;
2. artifacts of deleted projects, bytes then rows, an ``artifact.deleted`` event each:
   ``core.artifacts.delete_orphans``;
3. uploads past their expiry (FAILED, staged bytes removed) and deletions a crash
   interrupted: ``core.artifacts.sweep``, as ``python -m server.artifacts expire`` does.

Every batch is short transactions, so submits, workers and reads go on meanwhile. After
each batch the run reports progress (which extends its claim) and checks for a
cancellation, so a cancelled run stops between batches with every earlier batch done.
Running it again is always safe: what is gone stays gone, and what failed (an object
store error: counted in ``failures``) is tried again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentic.tasks.v1 import maintenance_pb2
from google.protobuf import timestamp_pb2
from sqlalchemy.exc import DBAPIError

from core.artifacts import OrphanReport, SweepReport, delete_orphans, sweep
from core.tasks import TERMINAL_STATES, PurgeResult, purge_tasks
from workers._context import TaskContext, TransientError

__all__ = ["DEFAULT_BATCH_SIZE", "MAX_BATCHES", "run_retention"]

DEFAULT_BATCH_SIZE = 500
"""RetentionSpec.batch_size 0: rows per transaction, short enough that a submit waiting
on a lock waits milliseconds."""
MAX_BATCHES = 1000
"""Batches of artifacts (orphans, and each half of the sweep) one run goes through at
most; the rest waits for the next run (task batches end when no old task is left)."""

# Fractions of the run reported at the start of each step (their totals are not known
# ahead; a count would be a full scan for a number shown once).
_ORPHANS_AT = 0.4
_SWEEP_AT = 0.7


def run_retention(
    spec: maintenance_pb2.RetentionSpec, context: TaskContext
) -> maintenance_pb2.RetentionResult:
    """Delete old terminal tasks, orphaned artifacts and expired uploads; the counts."""
    max_age = (
        spec.task_max_age.ToTimedelta()
        if spec.HasField("task_max_age")
        else timedelta(seconds=context.work.retention_task_max_age_seconds)
    )
    batch_size = spec.batch_size or DEFAULT_BATCH_SIZE
    now = datetime.now(UTC)
    engine = context.database
    objects = context.objects

    def step(fraction: float, message: str) -> None:
        context.raise_if_cancelled()
        context.report_progress(fraction, message)

    step(0.0, f"deleting terminal tasks last changed before {(now - max_age).isoformat()}")
    try:
        tasks = purge_tasks(
            engine,
            older_than=max_age,
            states=TERMINAL_STATES,
            batch_size=batch_size,
            now=now,
            after_batch=lambda done: step(0.0, _tasks_message(done)),
        )
        step(_ORPHANS_AT, "deleting artifacts of deleted projects")
        orphans = delete_orphans(
            engine,
            objects,
            batch_size=batch_size,
            max_batches=MAX_BATCHES,
            after_batch=lambda done: step(_ORPHANS_AT, _orphans_message(done)),
        )
        step(_SWEEP_AT, "expiring unfinished uploads")
        uploads = sweep(
            engine,
            objects,
            batch_size=batch_size,
            max_batches=MAX_BATCHES,
            after_batch=lambda done: step(_SWEEP_AT, _sweep_message(done)),
        )
    except DBAPIError as exc:
        # The database blinked: a new attempt starts over, and finds done what is done.
        raise TransientError(f"retention: {exc}") from exc
    cutoff = timestamp_pb2.Timestamp()
    cutoff.FromDatetime(now - max_age)
    return maintenance_pb2.RetentionResult(
        tasks_deleted=tasks.tasks,
        task_events_deleted=tasks.events,
        uploads_expired=uploads.expired_uploads,
        orphan_artifacts_deleted=orphans.deleted,
        bytes_freed=orphans.bytes_freed + uploads.bytes_freed,
        batches=tasks.batches + orphans.batches + uploads.batches,
        task_cutoff=cutoff,
        failures=orphans.failures + uploads.failures,
    )


def _tasks_message(done: PurgeResult) -> str:
    return f"deleted {done.tasks} tasks and {done.events} events in {done.batches} batches"


def _orphans_message(done: OrphanReport) -> str:
    return f"deleted {done.deleted} artifacts of deleted projects ({done.bytes_freed} bytes)"


def _sweep_message(done: SweepReport) -> str:
    return (
        f"expired {done.expired_uploads} uploads, finished {done.finished_deletions} "
        f"deletions ({done.bytes_freed} bytes)"
    )
