"""Reads of tasks: one task, a page of tasks, a task's events, and the metrics gauges.

Every read that answers a caller is scoped by ``viewer``: a task out of reach looks
exactly like a missing one, so ids cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agentic.tasks.v1 import tasks_pb2
from sqlalchemy import ColumnElement, func, or_, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from core.db import ProjectRow, TaskEventRow, TaskOutboxRow, TaskRow, utc
from core.rpc import NotFound
from core.tasks._record import TaskRecord, load, record_of
from core.tasks._wire import DOMAIN
from server import paging as _paging
from server.projects import reach_condition as project_reach_condition

DEFAULT_PAGE_SIZE = 50
EVENT_BATCH = 200

S = tasks_pb2  # states and kinds read better as S.TASK_STATE_RUNNING


@dataclass(frozen=True, slots=True)
class Page:
    """One page of tasks, newest first, and the token of the next ("" when last)."""

    records: list[TaskRecord]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class Gauges:
    """A snapshot of the task tables for the metrics endpoint."""

    active: dict[tuple[int, int], int]
    """(state, kind) -> tasks, for the states that are not terminal."""
    outbox_rows: int
    """Publishes not yet confirmed by the broker."""
    oldest_pending_time: datetime | None
    """Submit time of the oldest PENDING task."""


def task_not_found(task_id: str) -> NotFound:
    """The NOT_FOUND error for a task id."""
    return NotFound(
        f"task {task_id} not found",
        reason="TASK_NOT_FOUND",
        domain=DOMAIN,
        metadata={"id": task_id},
    )


def _filter_key(state: int, kind: int, owner_id: str, viewer: str | None) -> str:
    # The viewer is part of the filter: a page token only works for whoever listed.
    scope = "*" if viewer is None else viewer
    return f"tasks;state={state};kind={kind};owner_id={owner_id};viewer={scope}"


def task_reach_condition(viewer: str) -> ColumnElement[bool]:
    """SQL: ``viewer`` owns the task or reaches the project it belongs to."""
    return or_(
        TaskRow.owner_id == viewer,
        TaskRow.project_id.in_(select(ProjectRow.id).where(project_reach_condition(viewer))),
    )


class Reads:
    """Task reads of the API server on one session factory."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def get(self, task_id: str, viewer: str | None = None) -> TaskRecord:
        """The task, if ``viewer`` (None: anyone) reaches it; NOT_FOUND otherwise.

        Reach: the viewer owns the task or reaches the project it belongs to. A task out
        of reach gets the very answer a missing one gets, so ids cannot be probed.
        """
        with self._sessions() as session:
            if viewer is None:
                record = load(session, task_id)
            else:
                row = session.execute(
                    select(TaskRow.__table__).where(
                        TaskRow.id == task_id, task_reach_condition(viewer)
                    )
                ).first()
                record = None if row is None else record_of(row)
        if record is None:
            raise task_not_found(task_id)
        return record

    def page(
        self,
        *,
        page_size: int,
        page_token: str,
        state: int,
        kind: int,
        owner_id: str,
        viewer: str | None = None,
    ) -> Page:
        """A page newest first of the tasks ``viewer`` reaches (None: all), optionally
        filtered; tokens are bound to the filter and the viewer."""
        size = page_size or DEFAULT_PAGE_SIZE
        filter_key = _filter_key(state, kind, owner_id, viewer)
        cursor = _paging.decode(page_token, filter_key)
        query = select(TaskRow.__table__)
        if state:
            query = query.where(TaskRow.state == state)
        if kind:
            query = query.where(TaskRow.kind == kind)
        if owner_id:
            query = query.where(TaskRow.owner_id == owner_id)
        if viewer is not None:
            query = query.where(task_reach_condition(viewer))
        if cursor is not None:
            query = query.where(
                tuple_(TaskRow.create_time, TaskRow.id) < (cursor.create_time, cursor.id)
            )
        # One extra row tells whether another page exists without a COUNT.
        query = query.order_by(TaskRow.create_time.desc(), TaskRow.id.desc()).limit(size + 1)
        with self._sessions() as session:
            records = [record_of(row) for row in session.execute(query)]
        more = len(records) > size
        records = records[:size]
        token = ""
        if more:
            last = records[-1]
            token = _paging.encode(
                _paging.Cursor(create_time=last.create_time, id=last.id), filter_key
            )
        return Page(records, token)

    @staticmethod
    def check_page_token(
        page_token: str, *, state: int, kind: int, owner_id: str, viewer: str | None = None
    ) -> None:
        """INVALID_ARGUMENT unless ``page_token`` is empty or ours for this filter."""
        _paging.decode(page_token, _filter_key(state, kind, owner_id, viewer))

    def events_after(
        self,
        task_id: str,
        after_sequence: int,
        *,
        limit: int = EVENT_BATCH,
        newest: bool = False,
    ) -> tuple[list[bytes], TaskRecord]:
        """Up to ``limit`` serialized events after ``after_sequence``, oldest first, and the
        task; NOT_FOUND when absent.

        ``newest`` takes the last ``limit`` of those events instead of the first (still
        returned oldest first): a watch feed starts at the head of a long log without
        reading all of it. Either way the events are contiguous, read in one statement.
        """
        sequence = TaskEventRow.sequence
        with self._sessions() as session:
            record = load(session, task_id)
            if record is None:
                raise task_not_found(task_id)
            data = list(
                session.scalars(
                    select(TaskEventRow.data)
                    .where(TaskEventRow.task_id == task_id, sequence > after_sequence)
                    .order_by(sequence.desc() if newest else sequence)
                    .limit(limit)
                )
            )
        if newest:
            data.reverse()
        return [bytes(d) for d in data], record

    def gauges(self) -> Gauges:
        """Where work stands now, for the metrics endpoint (three small indexed queries)."""
        active = [
            S.TASK_STATE_PENDING,
            S.TASK_STATE_RUNNING,
            S.TASK_STATE_CANCELLING,
            S.TASK_STATE_RETRY_SCHEDULED,
        ]
        with self._sessions() as session:
            by_state = session.execute(
                select(TaskRow.state, TaskRow.kind, func.count())
                .where(TaskRow.state.in_(active))
                .group_by(TaskRow.state, TaskRow.kind)
            ).all()
            outbox = session.execute(select(func.count()).select_from(TaskOutboxRow)).scalar()
            oldest = session.execute(
                select(func.min(TaskRow.create_time)).where(TaskRow.state == S.TASK_STATE_PENDING)
            ).scalar()
        return Gauges(
            active={(int(state), int(kind)): int(n) for state, kind, n in by_state},
            outbox_rows=int(outbox or 0),
            oldest_pending_time=None if oldest is None else utc(oldest),
        )
