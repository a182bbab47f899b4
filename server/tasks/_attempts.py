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
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from agentic.tasks.v1 import tasks_pb2 as S
from google.rpc import code_pb2
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from server.db import TaskRow
from server.tasks import _outbox
from server.tasks._log import append, change, now
from server.tasks._outbox import OutboxItem
from server.tasks._record import TaskRecord, load
from server.tasks._wire import CANCELLED_STATUS, TERMINAL_STATES, error_status

_ACTIVE = (S.TASK_STATE_RUNNING, S.TASK_STATE_CANCELLING)


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
    """The transitions a worker makes, on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

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

        def decide(session: Session, record: TaskRecord | None, time: datetime) -> Claim:
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
                        session,
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
                        session,
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
                session,
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

        return change(self._sessions, task_id, decide)

    def renew(
        self, task_id: str, attempt: int, *, worker: str, lease_seconds: float
    ) -> TaskRecord | None:
        """Extend the lease (no event: nothing a client sees changed); None if not ours."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(TaskRow)
                .where(
                    TaskRow.id == task_id,
                    TaskRow.attempt == attempt,
                    TaskRow.claim_worker == worker,
                    TaskRow.state.in_(_ACTIVE),
                )
                .values(claim_expire_time=now() + timedelta(seconds=lease_seconds))
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return load(session, task_id)

    def progress(
        self,
        task_id: str,
        attempt: int,
        *,
        worker: str,
        fraction: float,
        message: str,
        lease_seconds: float,
    ) -> TaskRecord | None:
        """Record progress (an event) and extend the lease; None if the claim is gone."""

        def decide(
            session: Session, record: TaskRecord | None, time: datetime
        ) -> TaskRecord | None:
            if record is None or not _holds(record, attempt, worker):
                return None
            return append(
                session,
                record,
                time,
                progress_fraction=fraction,
                progress_message=message,
                claim_expire_time=time + timedelta(seconds=lease_seconds),
            )

        return change(self._sessions, task_id, decide)

    def cancel_requested(self, task_id: str) -> bool:
        """Whether CancelTask asked this task to stop."""
        with self._sessions() as session:
            value = session.scalar(select(TaskRow.cancel_requested).where(TaskRow.id == task_id))
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
    ) -> TaskRecord | None:
        """End the attempt with its result or error; None if the claim is gone.

        A task asked to stop (CANCELLING) ends CANCELLED whatever the attempt returned:
        the contract is that a cancelled task ends CANCELLED.
        """

        def decide(
            session: Session, record: TaskRecord | None, time: datetime
        ) -> TaskRecord | None:
            if record is None or not _holds(record, attempt, worker):
                return None
            released = {"claim_worker": None, "claim_expire_time": None, "end_time": time}
            if cancelled or record.state == S.TASK_STATE_CANCELLING:
                return append(
                    session,
                    record,
                    time,
                    state=S.TASK_STATE_CANCELLED,
                    error=CANCELLED_STATUS,
                    **released,
                )
            if error is not None:
                return append(
                    session, record, time, state=S.TASK_STATE_FAILED, error=error, **released
                )
            return append(
                session,
                record,
                time,
                state=S.TASK_STATE_SUCCEEDED,
                result=result or b"",
                progress_fraction=1.0,
                **released,
            )

        return change(self._sessions, task_id, decide)

    def schedule_retry(
        self, task_id: str, attempt: int, *, worker: str, error: bytes, delay_seconds: float
    ) -> Retry | None:
        """RETRY_SCHEDULED as attempt + 1, with an outbox row due after the delay.

        None if the claim is gone. A task asked to stop is cancelled instead (and None).
        """

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
        with self._sessions.begin() as session:
            _outbox.remove(session, ids)

    def get(self, task_id: str) -> TaskRecord | None:
        """The task as stored (None when absent)."""
        with self._sessions() as session:
            return load(session, task_id)
