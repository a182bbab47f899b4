"""Deleting old terminal tasks and their events, in bounded batches.

One implementation for the admin RPC PurgeTasks and the retention kind. Each batch is
one transaction: pick up to ``batch_size`` ids of matching tasks, delete their events and
any left-over outbox rows (a terminal task has none; they would block the delete on
PostgreSQL's foreign keys), then the tasks themselves, re-checking state and age in the
DELETE so a task retried (made PENDING again) between the pick and the delete is kept.
Short transactions keep locks brief while submits and workers go on.

A purged task's ``request_id`` is its idempotency record, and goes with it: a Submit
replaying it after the purge creates a new task. The age to purge at is therefore also
the idempotency window (TaskService promises 7 days).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import sessionmaker

from core.db import TaskEventRow, TaskOutboxRow, TaskRow

__all__ = ["DEFAULT_PURGE_BATCH_SIZE", "PurgeResult", "purge_tasks"]

DEFAULT_PURGE_BATCH_SIZE = 500


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge deleted (or, dry, would delete)."""

    tasks: int
    events: int
    batches: int
    """Transactions that deleted (0 for a dry run)."""


def _ignore(_done: PurgeResult) -> None:
    return None


def purge_tasks(
    engine: Engine,
    *,
    older_than: timedelta,
    states: frozenset[int],
    dry_run: bool = False,
    batch_size: int = DEFAULT_PURGE_BATCH_SIZE,
    now: datetime | None = None,
    after_batch: Callable[[PurgeResult], None] = _ignore,
) -> PurgeResult:
    """Delete (or count) tasks in ``states`` last changed before ``now - older_than``.

    ``after_batch`` gets the running totals after each committed batch; an exception it
    raises (a cancellation) stops the purge there, every earlier batch staying done.
    """
    cutoff = (now or datetime.now(UTC)) - older_than
    matches = (TaskRow.state.in_(sorted(states)), TaskRow.update_time < cutoff)
    sessions = sessionmaker(engine)
    if dry_run:
        with sessions() as session:
            tasks = session.scalar(select(func.count()).select_from(TaskRow).where(*matches))
            events = session.scalar(
                select(func.count())
                .select_from(TaskEventRow)
                .join(TaskRow, TaskRow.id == TaskEventRow.task_id)
                .where(*matches)
            )
        return PurgeResult(int(tasks or 0), int(events or 0), 0)
    done = PurgeResult(0, 0, 0)
    while True:
        with sessions.begin() as session:
            ids = list(session.scalars(select(TaskRow.id).where(*matches).limit(batch_size)))
            if not ids:
                break
            kept = select(TaskRow.id).where(TaskRow.id.in_(ids), *matches)
            dropped = session.execute(delete(TaskEventRow).where(TaskEventRow.task_id.in_(kept)))
            session.execute(delete(TaskOutboxRow).where(TaskOutboxRow.task_id.in_(kept)))
            gone = session.execute(delete(TaskRow).where(TaskRow.id.in_(ids), *matches))
        done = PurgeResult(
            done.tasks + int(gone.rowcount or 0),  # type: ignore[attr-defined]
            done.events + int(dropped.rowcount or 0),  # type: ignore[attr-defined]
            done.batches + 1,
        )
        after_batch(done)
        if len(ids) < batch_size:
            break
    return done
