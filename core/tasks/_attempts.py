"""Task storage for the worker side: claim an attempt, report, renew, and finish it once.

A worker runs an attempt only after ``claim`` moved it to RUNNING under its own claim
token with a lease. Every later write of the attempt (progress, result, error, retry) is
conditional on still holding that claim, so:

- a redelivered message of an attempt that already ended is acknowledged, never run;
- two copies never run at once: a copy that finds a live claim is told to come back
  when the lease runs out (``Claim.retry_in_seconds``);
- a copy whose worker died is taken over once its lease expired; a task whose attempt
  keeps losing its worker (``deliveries``) is failed as poison instead of run again;
- the result is written exactly once: the final transition needs the claim, and it
  releases it.

Cost per transition (this is the worker's hot path). Every transition is the event log's
optimistic write (``UPDATE tasks ... WHERE last_sequence = <read>`` plus the event, see
``core.tasks._log``). The caller may pass the record it got from its previous write
(``known=``): the write then needs no read, and the decision is made again on a fresh
read only when the write lost a race (a CancelTask, a takeover). Since every change of a
task bumps ``last_sequence``, a write that succeeded also proves that the record it was
decided on, cancel flag included, was current. On PostgreSQL the row update and the
event insert are one statement (a data-modifying CTE) on an autocommit connection each
thread keeps between calls: one round trip per transition, no BEGIN/COMMIT, no pool
checkout and pre-ping. On SQLite (tests, single-host setups) they share a transaction.
"""

from __future__ import annotations

import enum
import threading
import time as _time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from agentic.tasks.v1 import tasks_pb2 as S
from google.rpc import code_pb2
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from core.db import TaskRow
from core.rpc import Aborted
from core.tasks import _outbox
from core.tasks._log import MAX_CONFLICTS, Conflict, append, change, now
from core.tasks._outbox import OutboxItem
from core.tasks._record import TaskRecord, load, record_of
from core.tasks._wire import CANCELLED_STATUS, DOMAIN, TERMINAL_STATES, error_status

_ACTIVE = (S.TASK_STATE_RUNNING, S.TASK_STATE_CANCELLING)
# A thread's kept connection unused this long goes back to the pool and the next call
# checks one out again (with the pool's pre-ping): after a quiet spell the database may
# have restarted, while a busy worker uses its connection far more often than this.
_IDLE_SECONDS = 10.0

T = TypeVar("T")
Decide = Callable[[Connection, TaskRecord | None, datetime], T]


class ClaimOutcome(enum.Enum):
    """What the worker holding a message should do with it."""

    RUN = "run"
    """The attempt is ours: run it."""
    DONE = "done"
    """Nothing to run (ended, cancelled, superseded by a newer attempt): acknowledge."""
    BUSY = "busy"
    """Another copy holds a live claim: come back after ``retry_in_seconds``."""
    POISONED = "poisoned"
    """The attempt lost its worker too often and was failed: dead-letter the message."""


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of a claim, the task as it now is, and when to come back if BUSY."""

    outcome: ClaimOutcome
    record: TaskRecord | None
    retry_in_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Retry:
    """An automatic retry was scheduled: the task, and the publish that runs it later."""

    record: TaskRecord
    publish: OutboxItem


def _holds(record: TaskRecord | None, attempt: int, worker: str) -> bool:
    return (
        record is not None
        and record.attempt == attempt
        and record.claim_worker == worker
        and record.state in _ACTIVE
    )


class AttemptStore:
    """The transitions a worker makes, on one SQLAlchemy engine (safe to share by threads)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # Data-modifying CTEs (and so the one-statement transition) are PostgreSQL's.
        self._one_statement = engine.dialect.name == "postgresql"
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._kept = threading.local()

    # --- connections ----------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A connection for one transition: PostgreSQL, this thread's kept autocommit
        connection (each statement is its own transaction); SQLite, a transaction."""
        if not self._one_statement:
            with self._engine.begin() as connection:
                yield connection
            return
        kept: tuple[Connection, float] | None = getattr(self._kept, "value", None)
        self._kept.value = None  # not kept while in use: a failure below drops it
        if kept is not None and _time.monotonic() - kept[1] > _IDLE_SECONDS:
            kept[0].close()
            kept = None
        connection = kept[0] if kept is not None else self._autocommit.connect()
        try:
            yield connection
        except DBAPIError:
            # Broken or not, a connection that failed is not worth keeping; closing returns
            # it to the pool, which discards it when it was invalidated.
            connection.close()
            raise
        except BaseException:
            self._keep(connection)
            raise
        self._keep(connection)

    def _keep(self, connection: Connection) -> None:
        if connection.closed or connection.invalidated:
            connection.close()
            return
        self._kept.value = (connection, _time.monotonic())

    def close(self) -> None:
        """Return this thread's kept connection to the pool (other threads keep theirs)."""
        kept: tuple[Connection, float] | None = getattr(self._kept, "value", None)
        self._kept.value = None
        if kept is not None:
            kept[0].close()

    # --- the optimistic write -------------------------------------------------------

    def _change(self, task_id: str, decide: Decide[T], known: TaskRecord | None = None) -> T:
        """Run ``decide`` on ``known`` (or a fresh read), again on a fresh read whenever
        its write hits a Conflict. ``decide`` calls ``append`` at most once."""
        for _ in range(MAX_CONFLICTS):
            with self._connection() as connection:
                record = known if known is not None else load(connection, task_id)
                known = None
                try:
                    return decide(connection, record, now())
                except Conflict:
                    continue
        raise Aborted(
            f"task {task_id} is changing too fast; try again",
            reason="TASK_CONTENDED",
            domain=DOMAIN,
            metadata={"id": task_id},
        )

    # --- transitions ----------------------------------------------------------------

    def claim(
        self,
        task_id: str,
        attempt: int,
        *,
        worker: str,
        lease_seconds: float,
        max_deliveries: int,
    ) -> Claim:
        """Claim ``attempt`` for ``worker``; see ClaimOutcome for what may come back."""

        def decide(connection: Connection, record: TaskRecord | None, time: datetime) -> Claim:
            if record is None or record.attempt != attempt or record.state in TERMINAL_STATES:
                return Claim(ClaimOutcome.DONE, record)
            lease = time + timedelta(seconds=lease_seconds)
            if record.state in _ACTIVE:
                expires = record.claim_expire_time
                if expires is not None and expires > time:
                    return Claim(ClaimOutcome.BUSY, record, (expires - time).total_seconds())
                # The holder died (its lease ran out). Cancellation lives in the database,
                # so a task cancelled while its worker was gone ends here.
                if record.state == S.TASK_STATE_CANCELLING:
                    after = append(
                        connection,
                        record,
                        time,
                        state=S.TASK_STATE_CANCELLED,
                        error=CANCELLED_STATUS,
                        claim_worker=None,
                        claim_expire_time=None,
                        end_time=time,
                    )
                    return Claim(ClaimOutcome.DONE, after)
                if record.deliveries >= max_deliveries:
                    after = append(
                        connection,
                        record,
                        time,
                        state=S.TASK_STATE_FAILED,
                        error=error_status(
                            code_pb2.ABORTED,
                            f"attempt {attempt} lost its worker {record.deliveries} times",
                            reason="WORKER_LOST",
                        ),
                        claim_worker=None,
                        claim_expire_time=None,
                        end_time=time,
                    )
                    return Claim(ClaimOutcome.POISONED, after)
            # PENDING or RETRY_SCHEDULED, or a takeover of an abandoned claim.
            after = append(
                connection,
                record,
                time,
                state=S.TASK_STATE_RUNNING,
                claim_worker=worker,
                claim_expire_time=lease,
                claim_time=time,
                deliveries=record.deliveries + 1,
                start_time=record.start_time or time,
            )
            return Claim(ClaimOutcome.RUN, after)

        return self._change(task_id, decide)

    def renew(
        self, task_id: str, attempt: int, *, worker: str, lease_seconds: float
    ) -> TaskRecord | None:
        """Extend the lease (no event: nothing a client sees changed); None if not ours."""
        renewed = (
            update(TaskRow)
            .where(
                TaskRow.id == task_id,
                TaskRow.attempt == attempt,
                TaskRow.claim_worker == worker,
                TaskRow.state.in_(_ACTIVE),
            )
            .values(claim_expire_time=now() + timedelta(seconds=lease_seconds))
        )
        with self._connection() as connection:
            if self._one_statement:
                row = connection.execute(renewed.returning(*TaskRow.__table__.c)).first()
                return None if row is None else record_of(row)
            if connection.execute(renewed).rowcount != 1:
                return None
            return load(connection, task_id)

    def progress(
        self,
        task_id: str,
        attempt: int,
        *,
        worker: str,
        fraction: float,
        message: str,
        lease_seconds: float,
        known: TaskRecord | None = None,
    ) -> TaskRecord | None:
        """Record progress (an event) and extend the lease; None if the claim is gone.

        ``known``: the record of this attempt's previous write, if the caller has it (it
        saves the read). The record returned is current, its ``cancel_requested`` too.
        """

        def decide(
            connection: Connection, record: TaskRecord | None, time: datetime
        ) -> TaskRecord | None:
            if record is None or not _holds(record, attempt, worker):
                return None
            return append(
                connection,
                record,
                time,
                progress_fraction=fraction,
                progress_message=message,
                claim_expire_time=time + timedelta(seconds=lease_seconds),
            )

        return self._change(task_id, decide, known)

    def cancel_requested(self, task_id: str) -> bool:
        """Whether CancelTask asked this task to stop."""
        with self._connection() as connection:
            value = connection.scalar(select(TaskRow.cancel_requested).where(TaskRow.id == task_id))
        return bool(value)

    def finish(
        self,
        task_id: str,
        attempt: int,
        *,
        worker: str,
        result: bytes | None = None,
        error: bytes | None = None,
        cancelled: bool = False,
        known: TaskRecord | None = None,
    ) -> TaskRecord | None:
        """End the attempt with its result or error; None if the claim is gone.

        A task asked to stop (CANCELLING) ends CANCELLED whatever the attempt returned:
        the contract is that a cancelled task ends CANCELLED. ``known`` as in ``progress``.
        """

        def decide(
            connection: Connection, record: TaskRecord | None, time: datetime
        ) -> TaskRecord | None:
            if record is None or not _holds(record, attempt, worker):
                return None
            released: dict[str, Any] = {
                "claim_worker": None,
                "claim_expire_time": None,
                "end_time": time,
            }
            if cancelled or record.state == S.TASK_STATE_CANCELLING:
                return append(
                    connection,
                    record,
                    time,
                    state=S.TASK_STATE_CANCELLED,
                    error=CANCELLED_STATUS,
                    **released,
                )
            if error is not None:
                return append(
                    connection, record, time, state=S.TASK_STATE_FAILED, error=error, **released
                )
            return append(
                connection,
                record,
                time,
                state=S.TASK_STATE_SUCCEEDED,
                result=result or b"",
                progress_fraction=1.0,
                **released,
            )

        return self._change(task_id, decide, known)

    def schedule_retry(
        self, task_id: str, attempt: int, *, worker: str, error: bytes, delay_seconds: float
    ) -> Retry | None:
        """RETRY_SCHEDULED as attempt + 1, with an outbox row due after the delay.

        None if the claim is gone. A task asked to stop is cancelled instead (and None).
        Rare (a transient failure), so a plain transaction on a pooled session; this
        thread's kept connection goes back to the pool first, so a pool sized for the task
        thread and the watchdog has one free.
        """
        self.close()

        def decide(session: Session, record: TaskRecord | None, time: datetime) -> Retry | None:
            if record is None or not _holds(record, attempt, worker):
                return None
            if record.state == S.TASK_STATE_CANCELLING:
                append(
                    session,
                    record,
                    time,
                    state=S.TASK_STATE_CANCELLED,
                    error=CANCELLED_STATUS,
                    claim_worker=None,
                    claim_expire_time=None,
                    end_time=time,
                )
                return None
            after = append(
                session,
                record,
                time,
                state=S.TASK_STATE_RETRY_SCHEDULED,
                attempt=attempt + 1,
                error=error,
                progress_fraction=0.0,
                progress_message="",
                claim_worker=None,
                claim_expire_time=None,
                claim_time=None,
                deliveries=0,
                auto_retries=record.auto_retries + 1,
                start_time=None,
            )
            due = time + timedelta(seconds=delay_seconds)
            return Retry(after, _outbox.add(session, after, not_before=due))

        return change(self._sessions, task_id, decide)

    def published(self, ids: list[int]) -> None:
        """The broker confirmed these publishes."""
        self.close()
        with self._sessions.begin() as session:
            _outbox.remove(session, ids)

    def get(self, task_id: str) -> TaskRecord | None:
        """The task as stored (None when absent)."""
        with self._connection() as connection:
            return load(connection, task_id)
