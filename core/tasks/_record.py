"""A task row as an immutable value, read and written field by field."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypedDict

from agentic.tasks.v1 import tasks_pb2
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from core.db import TaskRow, utc


class AttemptReset(TypedDict):
    """The fields a new attempt starts from (a submit's first, or RetryTask's next)."""

    progress_fraction: float
    progress_message: str
    result: bytes | None
    error: bytes | None
    cancel_requested: bool
    cancel_time: datetime | None
    claim_worker: str | None
    claim_expire_time: datetime | None
    claim_time: datetime | None
    deliveries: int
    auto_retries: int
    start_time: datetime | None
    end_time: datetime | None


FRESH_ATTEMPT: AttemptReset = {
    "progress_fraction": 0.0,
    "progress_message": "",
    "result": None,
    "error": None,
    "cancel_requested": False,
    "cancel_time": None,
    "claim_worker": None,
    "claim_expire_time": None,
    "claim_time": None,
    "deliveries": 0,
    "auto_retries": 0,
    "start_time": None,
    "end_time": None,
}
"""A fresh attempt: no progress, no outcome, no claim, no cancel, a full retry budget."""


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """Every column of ``tasks``; see ``core.db.TaskRow`` for their meaning.

    ``kind``, ``state`` and ``priority`` are stored as the numbers of their proto enums,
    and typed as those enums, so they go to the wire and to ``Name()`` as they are.
    """

    id: str
    kind: tasks_pb2.TaskKind.ValueType
    state: tasks_pb2.TaskState.ValueType
    priority: tasks_pb2.Priority.ValueType
    owner_id: str
    request_id: str
    request_hash: str
    spec: bytes
    attempt: int
    progress_fraction: float
    progress_message: str
    result: bytes | None
    error: bytes | None
    cancel_requested: bool
    cancel_time: datetime | None
    claim_worker: str | None
    claim_expire_time: datetime | None
    claim_time: datetime | None
    deliveries: int
    auto_retries: int
    create_time: datetime
    update_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    last_sequence: int
    project_id: str | None = None


COLUMNS = tuple(f.name for f in fields(TaskRecord))


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, memoryview):  # PostgreSQL bytea
        return bytes(value)
    return value


def record_of(row: Any) -> TaskRecord:
    """A record from a result row of ``select(TaskRow.__table__)``."""
    mapping = row._mapping
    return TaskRecord(**{name: _value(mapping[name]) for name in COLUMNS})


# Built once: SQLAlchemy finds its compiled form by identity instead of rebuilding it.
_LOAD = select(TaskRow.__table__).where(TaskRow.__table__.c.id == bindparam("task_id"))


def load(session: Session | Connection, task_id: str) -> TaskRecord | None:
    """The task, or None when there is no task with this id (in a session or on a Core
    connection)."""
    row = session.execute(_LOAD, {"task_id": task_id}).first()
    return None if row is None else record_of(row)
