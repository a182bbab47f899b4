"""Operator actions on a task: CancelTask and RetryTask.

Each is one ``_log.change``: decide on the current record, append one event, retry on a
lost race.
"""

from __future__ import annotations

from datetime import datetime

from agentic.tasks.v1 import tasks_pb2
from sqlalchemy.orm import Session, sessionmaker

from core.rpc import FailedPrecondition
from core.tasks import _outbox
from core.tasks._log import append, change
from core.tasks._record import FRESH_ATTEMPT, TaskRecord
from core.tasks._wire import CANCELLED_STATUS, DOMAIN, TERMINAL_STATES
from server.tasks._store_reads import task_not_found
from server.tasks._store_submit import Written

S = tasks_pb2  # states and kinds read better as S.TASK_STATE_RUNNING


class OperatorActions:
    """CancelTask and RetryTask on one session factory."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def cancel(self, task_id: str) -> Written:
        """PENDING/RETRY_SCHEDULED: CANCELLED now. RUNNING: CANCELLING (the worker stops it).

        CANCELLING stays as it is; an ended task is FAILED_PRECONDITION.
        """

        def decide(session: Session, record: TaskRecord | None, time: datetime) -> Written:
            if record is None:
                raise task_not_found(task_id)
            if record.state in TERMINAL_STATES:
                raise FailedPrecondition(
                    f"task {task_id} already ended",
                    reason="TASK_ALREADY_ENDED",
                    domain=DOMAIN,
                    metadata={"id": task_id, "state": S.TaskState.Name(record.state)},
                )
            if record.state == S.TASK_STATE_CANCELLING:
                return Written(record, None)
            if record.state == S.TASK_STATE_RUNNING:
                after = append(
                    session,
                    record,
                    time,
                    state=S.TASK_STATE_CANCELLING,
                    cancel_requested=True,
                    cancel_time=time,
                )
                return Written(after, None)
            # Not started (or waiting for a retry): it never runs. A message still in the
            # queue finds it CANCELLED when a worker claims it.
            _outbox.remove_for_task(session, task_id)
            after = append(
                session,
                record,
                time,
                state=S.TASK_STATE_CANCELLED,
                cancel_requested=True,
                cancel_time=time,
                error=CANCELLED_STATUS,
                end_time=time,
            )
            return Written(after, None)

        return change(self._sessions, task_id, decide)

    def retry(self, task_id: str) -> Written:
        """A FAILED or CANCELLED task becomes PENDING again as attempt + 1."""

        def decide(session: Session, record: TaskRecord | None, time: datetime) -> Written:
            if record is None:
                raise task_not_found(task_id)
            if record.state not in (S.TASK_STATE_FAILED, S.TASK_STATE_CANCELLED):
                raise FailedPrecondition(
                    f"task {task_id} is neither failed nor cancelled",
                    reason="TASK_NOT_RETRYABLE",
                    domain=DOMAIN,
                    metadata={"id": task_id, "state": S.TaskState.Name(record.state)},
                )
            after = append(
                session,
                record,
                time,
                state=S.TASK_STATE_PENDING,
                attempt=record.attempt + 1,
                **FRESH_ATTEMPT,
            )
            return Written(after, _outbox.add(session, after, not_before=time))

        return change(self._sessions, task_id, decide)
