"""PurgeTasks: delete old terminal tasks and their events, in bounded batches.

Each batch is one transaction: pick up to ``batch_size`` ids of matching tasks, delete
their events and any left-over outbox rows (a terminal task has none; they would block
the delete on PostgreSQL's foreign keys), then the tasks themselves, re-checking state
and age in the DELETE so a task retried (made PENDING again) between the pick and the
delete is kept. Short transactions keep locks brief while submits and workers go on.

A purged task's ``request_id`` is free again: a Submit replaying it after the purge
creates a new task. The age to purge at is therefore also the idempotency window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agentic.tasks.v1 import tasks_pb2
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import sessionmaker

from core.db import TaskEventRow, TaskOutboxRow, TaskRow
from core.rpc import FieldViolation, InvalidArgument

TERMINAL_STATES = frozenset(
    {
        tasks_pb2.TASK_STATE_SUCCEEDED,
        tasks_pb2.TASK_STATE_FAILED,
        tasks_pb2.TASK_STATE_CANCELLED,
    }
)
DEFAULT_BATCH_SIZE = 500
_DOMAIN = "agentic.admin.v1"


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge deleted (or, dry, would delete)."""

    tasks: int
    events: int
    batches: int


def _state_name(state: int) -> str:
    try:
        return tasks_pb2.TaskState.Name(state)  # type: ignore[arg-type]
    except ValueError:
        return str(state)


def check_request(older_than_seconds: float | None, states: Iterable[int]) -> frozenset[int]:
    """The states to purge; INVALID_ARGUMENT (with field violations) for no age or a
    non-terminal state."""
    violations = []
    if older_than_seconds is None or older_than_seconds < 1:
        violations.append(
            FieldViolation(
                "older_than",
                "is required: purge only tasks older than a stated age (at least 1s)",
                reason="older_than.required",
            )
        )
    picked = frozenset(states) or TERMINAL_STATES
    for index, state in enumerate(states):
        if state not in TERMINAL_STATES:
            violations.append(
                FieldViolation(
                    f"states[{index}]",
                    f"{_state_name(state)} is not terminal; only TASK_STATE_SUCCEEDED, "
                    "TASK_STATE_FAILED and TASK_STATE_CANCELLED may be purged",
                    reason="states.not_terminal",
                )
            )
    if violations:
        raise InvalidArgument(violations, reason="INVALID_PURGE", domain=_DOMAIN)
    return picked


def purge_tasks(
    engine: Engine,
    *,
    older_than: timedelta,
    states: frozenset[int],
    dry_run: bool,
    batch_size: int = DEFAULT_BATCH_SIZE,
    now: datetime | None = None,
) -> PurgeResult:
    """Delete (or count) tasks in ``states`` last changed before ``now - older_than``."""
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
    total_tasks = total_events = batches = 0
    while True:
        with sessions.begin() as session:
            ids = list(session.scalars(select(TaskRow.id).where(*matches).limit(batch_size)))
            if not ids:
                break
            kept = select(TaskRow.id).where(TaskRow.id.in_(ids), *matches)
            dropped = session.execute(delete(TaskEventRow).where(TaskEventRow.task_id.in_(kept)))
            session.execute(delete(TaskOutboxRow).where(TaskOutboxRow.task_id.in_(kept)))
            gone = session.execute(delete(TaskRow).where(TaskRow.id.in_(ids), *matches))
        batches += 1
        total_events += int(dropped.rowcount or 0)  # type: ignore[attr-defined]
        total_tasks += int(gone.rowcount or 0)  # type: ignore[attr-defined]
        if len(ids) < batch_size:
            break
    return PurgeResult(total_tasks, total_events, batches)
