"""The event log: every change of a task is one row update plus one event, atomically.

``append`` is the only way task rows change after they are created. It writes the new
values with ``UPDATE tasks ... WHERE id = :id AND last_sequence = :read`` and inserts the
event numbered ``read + 1`` in the caller's transaction. A writer that lost a race
updates no row and gets None back; it re-reads and decides again (``change`` does this a
bounded number of times). Sequences therefore never gap or repeat, whatever the number of
concurrent writers (API servers, workers, watchdogs), and the primary key
(task_id, sequence) of ``task_events`` would refuse a duplicate if they ever did.

The UPDATE is the transaction's first write, so on SQLite it takes the write lock under
the busy timeout instead of failing to upgrade a read snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import insert, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import TaskEventRow, TaskRow
from core.rpc import Aborted
from core.tasks._record import COLUMNS, TaskRecord, load
from core.tasks._wire import DOMAIN, event_of

T = TypeVar("T")

# Writers retry a lost race this many times; more means a hot task with many writers,
# which this design does not expect (one worker plus the odd CancelTask).
MAX_CONFLICTS = 50


class Conflict(Exception):
    """Another writer changed the task between our read and our write."""


def now() -> datetime:
    """The time every writer stamps: aware UTC."""
    return datetime.now(UTC)


def insert_new(session: Session, record: TaskRecord, time: datetime) -> None:
    """Insert a new task (``last_sequence`` 1) and its first event."""
    session.execute(insert(TaskRow).values({name: getattr(record, name) for name in COLUMNS}))
    _insert_event(session, record, time)


def append(session: Session, before: TaskRecord, time: datetime, **changes: Any) -> TaskRecord:
    """Apply ``changes`` and append their event; Conflict when ``before`` is stale."""
    after = replace(before, **changes, update_time=time, last_sequence=before.last_sequence + 1)
    values = {
        name: getattr(after, name)
        for name in COLUMNS
        if getattr(after, name) != getattr(before, name)
    }
    result = session.execute(
        update(TaskRow)
        .where(TaskRow.id == before.id, TaskRow.last_sequence == before.last_sequence)
        .values(values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(before.id)
    _insert_event(session, after, time)
    return after


def _insert_event(session: Session, record: TaskRecord, time: datetime) -> None:
    session.execute(
        insert(TaskEventRow).values(
            task_id=record.id,
            sequence=record.last_sequence,
            time=time,
            data=event_of(record, time).SerializeToString(),
        )
    )


def change(
    sessions: sessionmaker[Session],
    task_id: str,
    decide: Callable[[Session, TaskRecord | None, datetime], T],
) -> T:
    """Run ``decide`` in a transaction, again from a fresh read whenever it hits a Conflict.

    ``decide`` reads nothing itself: it gets the current record (None when absent) and the
    time, and calls ``append`` (and anything else) on the session it is given.
    """
    for _ in range(MAX_CONFLICTS):
        try:
            with sessions.begin() as session:
                return decide(session, load(session, task_id), now())
        except Conflict:
            continue
    raise Aborted(
        f"task {task_id} is changing too fast; try again",
        reason="TASK_CONTENDED",
        domain=DOMAIN,
        metadata={"id": task_id},
    )
