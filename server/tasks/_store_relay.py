"""The relay's side of the store: outbox rows due, their confirms, and the backstops that
queue a run message again for tasks the broker lost.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from agentic.tasks.v1 import tasks_pb2
from sqlalchemy import ColumnElement, Engine, Select, exists, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import TaskOutboxRow, TaskRow
from core.tasks import _outbox
from core.tasks._log import now
from core.tasks._outbox import OutboxItem
from core.tasks._record import TaskRecord, record_of

S = tasks_pb2  # states and kinds read better as S.TASK_STATE_RUNNING


class Relay:
    """What the relay loop reads and writes, on one engine and its session factory."""

    def __init__(self, engine: Engine, sessions: sessionmaker[Session]) -> None:
        # Confirms and deferrals are one statement each: a plain autocommit connection.
        self._engine = engine
        self._sessions = sessions

    def due_publishes(self, limit: int) -> list[OutboxItem]:
        """Outbox rows due for (re)publishing."""
        with self._sessions() as session:
            return _outbox.due(session, now(), limit)

    def published(self, ids: list[int]) -> None:
        """The broker confirmed these publishes."""
        # One statement, atomic by itself: autocommit spares the BEGIN and COMMIT trips.
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            _outbox.remove(conn, ids)

    def publish_failed(self, ids: list[int], retry_in_seconds: float) -> None:
        """These publishes failed; the relay tries them again later."""
        until = now() + timedelta(seconds=retry_in_seconds)
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            _outbox.defer(conn, ids, until)

    def reap_abandoned(self, *, expired_for_seconds: float, limit: int) -> int:
        """Queue a new message for running tasks whose claim lapsed long ago.

        A worker that died normally has its message redelivered by the broker; this is
        the backstop for a message that was acknowledged without the task ending (a hard
        time limit enforced by Celery itself, an operator purging the queue). The claim's
        expiry is moved to now so the same task is reaped again only after another
        ``expired_for_seconds``; no event, because nothing about the task changed.
        """
        time = now()
        cutoff = time - timedelta(seconds=expired_for_seconds)
        pending = exists().where(TaskOutboxRow.task_id == TaskRow.id)
        candidates = (
            select(TaskRow.__table__)
            .where(
                TaskRow.state.in_([S.TASK_STATE_RUNNING, S.TASK_STATE_CANCELLING]),
                TaskRow.claim_expire_time < cutoff,
                ~pending,
            )
            .limit(limit)
        )
        return self._requeue(
            candidates,
            lambda record: [TaskRow.claim_expire_time == record.claim_expire_time],
            {"claim_expire_time": time},
            time,
        )

    def recover_pending(self, *, older_than_seconds: float, limit: int) -> int:
        """Queue the run message again for PENDING tasks that waited too long.

        The backstop for a message the broker confirmed and later lost before any worker
        claimed it (a purged queue, a broker that lost its disk): the database says
        PENDING, nothing will ever run it. A task qualifies once it has waited
        ``older_than_seconds`` since submit (or since its last re-queue) with no publish
        of its own outstanding; ``dispatch_time`` records the re-queue, so each task is
        re-queued at most once per interval. A duplicate this makes for a task that was
        merely waiting in a long queue costs one message: the claim in the database
        lets only one copy run.
        """
        time = now()
        cutoff = time - timedelta(seconds=older_than_seconds)
        outstanding = exists().where(TaskOutboxRow.task_id == TaskRow.id)
        last_queued = func.coalesce(TaskRow.dispatch_time, TaskRow.create_time)
        candidates = (
            select(TaskRow.__table__)
            .where(
                TaskRow.state == S.TASK_STATE_PENDING,
                TaskRow.claim_worker.is_(None),
                last_queued < cutoff,
                ~outstanding,
            )
            .order_by(TaskRow.create_time)
            .limit(limit)
        )
        return self._requeue(
            candidates,
            lambda _record: [TaskRow.state == S.TASK_STATE_PENDING],
            {"dispatch_time": time},
            time,
        )

    def _requeue(
        self,
        candidates: Select[Any],
        still: Callable[[TaskRecord], list[ColumnElement[bool]]],
        mark: dict[str, Any],
        time: datetime,
    ) -> int:
        """Queue a run message for each candidate that is still as it was read.

        Each one is its own transaction: an update guarded by ``last_sequence`` and the
        ``still`` conditions sets ``mark`` (what keeps it from being picked again before
        its interval), then its outbox row is added, due at once (no fast path to wait
        for). No event: nothing about the task changed. Returns how many were queued.
        """
        with self._sessions() as session:
            records = [record_of(row) for row in session.execute(candidates).all()]
        due = time - timedelta(seconds=_outbox.FAST_PATH_GRACE_SECONDS)
        queued = 0
        for record in records:
            with self._sessions.begin() as session:
                # Core on the session's connection: same transaction, and the result is a
                # CursorResult, whose rowcount is typed.
                moved = session.connection().execute(
                    update(TaskRow)
                    .where(
                        TaskRow.id == record.id,
                        TaskRow.last_sequence == record.last_sequence,
                        *still(record),
                    )
                    .values(**mark)
                )
                if moved.rowcount == 1:
                    _outbox.add(session, record, not_before=due)
                    queued += 1
        return queued
