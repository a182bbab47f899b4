"""The event log: every change of a task is one row update plus one event, atomically.

``append`` is the only way task rows change after they are created, and the only place
events are written (``insert_events`` writes the first event of new tasks). It writes the
new values with ``UPDATE tasks ... WHERE id = :id AND last_sequence = :read`` and inserts
the event numbered ``read + 1`` in the caller's transaction; on PostgreSQL both are one
statement (a data-modifying CTE), so an autocommit connection needs one round trip. A
writer that lost a race updates no row and gets Conflict; it re-reads and decides again
(``change`` does this a bounded number of times). Sequences therefore never gap or
repeat, whatever the number of concurrent writers (API servers, workers, watchdogs), and
the primary key (task_id, sequence) of ``task_events`` would refuse a duplicate if they
ever did.

The UPDATE is the transaction's first write, so on SQLite it takes the write lock under
the busy timeout instead of failing to upgrade a read snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    LargeBinary,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import Executable

from core.db import TaskEventRow, TaskRow
from core.rpc import Aborted
from core.tasks._record import COLUMNS, TaskRecord, load
from core.tasks._wire import DOMAIN, event_of

T = TypeVar("T")

# Writers retry a lost race this many times; more means a hot task with many writers,
# which this design does not expect (one worker plus the odd CancelTask).
MAX_CONFLICTS = 50

_TASKS = cast(Table, TaskRow.__table__)
_EVENTS = cast(Table, TaskEventRow.__table__)
_EVENT_COLUMNS = ("task_id", "sequence", "time", "data")
_INSERT_EVENT = insert(_EVENTS).values(
    task_id=bindparam("task_id"),
    sequence=bindparam("event_sequence"),
    time=bindparam("event_time"),
    data=bindparam("event_data"),
)
# The conditional update of each set of changed columns, by (columns, one statement):
# built once, so SQLAlchemy compiles it once and the driver prepares it once. A handful
# of sets exist (one per kind of transition), so the cache stays small.
_WRITES: dict[tuple[tuple[str, ...], bool], Executable] = {}


class Conflict(Exception):
    """Another writer changed the task between our read and our write."""


def now() -> datetime:
    """The time every writer stamps: aware UTC."""
    return datetime.now(UTC)


def event_data(record: TaskRecord, time: datetime) -> bytes:
    """The serialized event that records ``record`` as the task's newest state."""
    data: bytes = event_of(record, time).SerializeToString()
    return data


def _event_params(record: TaskRecord, time: datetime) -> dict[str, Any]:
    return {
        "task_id": record.id,
        "event_sequence": record.last_sequence,
        "event_time": time,
        "event_data": event_data(record, time),
    }


def insert_events(connection: Connection, records: Sequence[TaskRecord], time: datetime) -> None:
    """Insert the event of each record's current sequence (new tasks: their first event),
    in the caller's transaction; one statement for all of them."""
    if records:
        connection.execute(_INSERT_EVENT, [_event_params(r, time) for r in records])


def append(
    db: Session | Connection, before: TaskRecord, time: datetime, **changes: Any
) -> TaskRecord:
    """Apply ``changes`` and append their event; Conflict when ``before`` is stale.

    ``db`` is an ORM session (its transaction) or a Core connection (a transaction, or
    autocommit: on PostgreSQL the write is one statement, atomic on its own).
    """
    # Core on the session's own connection: same transaction, and a typed rowcount.
    connection = db.connection() if isinstance(db, Session) else db
    after = replace(before, **changes, update_time=time, last_sequence=before.last_sequence + 1)
    names = tuple(name for name in COLUMNS if getattr(after, name) != getattr(before, name))
    params = {f"new_{name}": getattr(after, name) for name in names}
    params.update(read_sequence=before.last_sequence, **_event_params(after, time))
    # Data-modifying CTEs (and so the one-statement write) are PostgreSQL's.
    one_statement = connection.dialect.name == "postgresql"
    key = (names, one_statement)
    statement = _WRITES.get(key)
    if statement is None:
        statement = _WRITES.setdefault(key, _write_statement(names, one_statement))
    if one_statement:
        # RETURNING rather than rowcount: the driver reports -1 for this statement.
        if connection.execute(statement, params).first() is None:
            raise Conflict(before.id)
        return after
    if connection.execute(statement, params).rowcount != 1:
        raise Conflict(before.id)
    connection.execute(_INSERT_EVENT, params)
    return after


def _write_statement(names: tuple[str, ...], one_statement: bool) -> Executable:
    """The conditional update of the columns ``names`` (with ``one_statement``, the event
    insert with it), with bound parameters only."""
    changed = (
        update(_TASKS)
        .where(
            _TASKS.c.id == bindparam("task_id"),
            _TASKS.c.last_sequence == bindparam("read_sequence"),
        )
        .values({name: bindparam(f"new_{name}", type_=_TASKS.c[name].type) for name in names})
    )
    if not one_statement:
        return changed
    # The INSERT selects from the UPDATE's RETURNING: no row updated (a lost race), no
    # event inserted, and the statement is atomic on its own.
    cte = changed.returning(_TASKS.c.id).cte("changed")
    return (
        insert(_EVENTS)
        .from_select(
            _EVENT_COLUMNS,
            select(
                cte.c.id,
                bindparam("event_sequence", type_=BigInteger),
                bindparam("event_time", type_=DateTime(timezone=True)),
                bindparam("event_data", type_=LargeBinary),
            ),
        )
        .returning(_EVENTS.c.sequence)
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
