"""The publish outbox: messages for the work queue that the broker has not confirmed yet.

A row is written in the same transaction that makes a task runnable (submit, automatic
retry, RetryTask, reaping an abandoned claim), so a committed task always has either a
confirmed message or an outbox row. The writer then publishes at once (the fast path) and
deletes the row on the broker's confirm; the relay publishes whatever is left once it is
due. A message published twice is harmless: workers claim before they run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Table, delete, insert, select, update
from sqlalchemy.orm import Session

from core.db import TaskOutboxRow, utc
from core.tasks._record import TaskRecord

# The fast path gets this long before the relay publishes the same row.
FAST_PATH_GRACE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message to publish: run ``attempt`` of ``task_id`` not before ``not_before``."""

    id: int
    task_id: str
    attempt: int
    kind: int
    priority: int
    not_before: datetime


def add(session: Session, record: TaskRecord, *, not_before: datetime) -> OutboxItem:
    """Queue a publish of the record's current attempt, in the caller's transaction."""
    row = TaskOutboxRow(
        task_id=record.id,
        attempt=record.attempt,
        kind=record.kind,
        priority=record.priority,
        not_before=not_before,
        relay_time=not_before + timedelta(seconds=FAST_PATH_GRACE_SECONDS),
        create_time=record.update_time,
    )
    session.add(row)
    session.flush()  # assigns row.id
    return _item(row)


# Core statements on the table: no ORM unit of work on the submit path.
_TABLE = cast(Table, TaskOutboxRow.__table__)
_INSERT_RETURNING = insert(_TABLE).returning(_TABLE.c.id, _TABLE.c.task_id)


def add_many(
    connection: Connection, records: Sequence[TaskRecord], *, not_before: datetime
) -> dict[str, OutboxItem]:
    """Queue a publish of each record's current attempt, in the caller's transaction; the
    items by task id. One statement for all of them (SQLAlchemy's insertmanyvalues)."""
    if not records:
        return {}
    relay_time = not_before + timedelta(seconds=FAST_PATH_GRACE_SECONDS)
    rows = connection.execute(
        _INSERT_RETURNING,
        [
            {
                "task_id": r.id,
                "attempt": r.attempt,
                "kind": r.kind,
                "priority": r.priority,
                "not_before": not_before,
                "relay_time": relay_time,
                "create_time": r.update_time,
            }
            for r in records
        ],
    )
    ids = {task_id: row_id for row_id, task_id in rows}
    return {
        r.id: OutboxItem(
            id=ids[r.id],
            task_id=r.id,
            attempt=r.attempt,
            kind=r.kind,
            priority=r.priority,
            not_before=not_before,
        )
        for r in records
    }


def _item(row: TaskOutboxRow) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        task_id=row.task_id,
        attempt=row.attempt,
        kind=row.kind,
        priority=row.priority,
        not_before=utc(row.not_before),
    )


def due(session: Session, time: datetime, limit: int) -> list[OutboxItem]:
    """Rows the relay should publish now, oldest first."""
    rows = session.scalars(
        select(TaskOutboxRow)
        .where(TaskOutboxRow.relay_time <= time)
        .order_by(TaskOutboxRow.relay_time, TaskOutboxRow.id)
        .limit(limit)
    )
    return [_item(row) for row in rows]


def remove(session: Session | Connection, ids: list[int]) -> None:
    """Forget confirmed publishes (one statement however many)."""
    if ids:
        session.execute(delete(_TABLE).where(_TABLE.c.id.in_(ids)))


def remove_for_task(session: Session, task_id: str) -> None:
    """Forget every pending publish of a task (it was cancelled before it started)."""
    session.execute(delete(TaskOutboxRow).where(TaskOutboxRow.task_id == task_id))


def defer(session: Session | Connection, ids: list[int], until: datetime) -> None:
    """Publishes that failed: try them again at ``until``."""
    if ids:
        session.execute(update(_TABLE).where(_TABLE.c.id.in_(ids)).values(relay_time=until))
