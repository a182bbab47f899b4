"""Task storage for the API side: submit, read, list, cancel, retry, and the relay's rows.

Plain synchronous code that knows nothing about gRPC or the broker; the facade runs it in
the database thread pool. Every change goes through ``_log.change``/``append``: one row
update plus one event per transaction, guarded by ``last_sequence``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from agentic.tasks.v1 import tasks_pb2
from sqlalchemy import Engine, and_, exists, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from server import paging as _paging
from server.db import TaskEventRow, TaskOutboxRow, TaskRow
from server.rpc import AlreadyExists, FailedPrecondition, NotFound
from server.tasks import _outbox
from server.tasks._log import Conflict, append, change, insert_new, now
from server.tasks._outbox import OutboxItem
from server.tasks._record import TaskRecord, load, record_of
from server.tasks._wire import CANCELLED_STATUS, DOMAIN, TERMINAL_STATES

DEFAULT_PAGE_SIZE = 50
EVENT_BATCH = 200

S = tasks_pb2  # states and kinds read better as S.TASK_STATE_RUNNING


@dataclass(frozen=True, slots=True)
class Submitted:
    """The task a submit resolved to, and the publish to attempt (None on a resubmit)."""

    record: TaskRecord
    publish: OutboxItem | None


@dataclass(frozen=True, slots=True)
class Changed:
    """A task after CancelTask/RetryTask, and the publish to attempt, if any."""

    record: TaskRecord
    publish: OutboxItem | None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of tasks, newest first, and the token of the next ("" when last)."""

    records: list[TaskRecord]
    next_page_token: str


def task_not_found(task_id: str) -> NotFound:
    """The NOT_FOUND error for a task id."""
    return NotFound(
        f"task {task_id} not found",
        reason="TASK_NOT_FOUND",
        domain=DOMAIN,
        metadata={"id": task_id},
    )


def _filter_key(state: int, kind: int, owner_id: str) -> str:
    return f"tasks;state={state};kind={kind};owner_id={owner_id}"


class TaskStore:
    """Task operations of the API server on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # --- submit and read --------------------------------------------------------------

    def submit(
        self,
        *,
        kind: int,
        spec: bytes,
        owner_id: str,
        priority: int,
        request_id: str,
        request_hash: str,
    ) -> Submitted:
        """Create the task, its first event and its outbox row in one transaction.

        The same request_id with the same request hash returns the existing task; with a
        different hash it is ALREADY_EXISTS (REQUEST_ID_REUSED).
        """
        for _ in range(3):
            existing = self._by_request_id(request_id)
            if existing is not None:
                if existing.request_hash != request_hash:
                    raise AlreadyExists(
                        f"request_id {request_id} was used for a different request",
                        reason="REQUEST_ID_REUSED",
                        domain=DOMAIN,
                        metadata={"request_id": request_id, "task_id": existing.id},
                    )
                return Submitted(existing, None)
            time = now()
            record = TaskRecord(
                id=str(uuid.uuid4()),
                kind=kind,
                state=S.TASK_STATE_PENDING,
                priority=priority or S.PRIORITY_NORMAL,
                owner_id=owner_id,
                request_id=request_id,
                request_hash=request_hash,
                spec=spec,
                attempt=1,
                progress_fraction=0.0,
                progress_message="",
                result=None,
                error=None,
                cancel_requested=False,
                cancel_time=None,
                claim_worker=None,
                claim_expire_time=None,
                claim_time=None,
                deliveries=0,
                auto_retries=0,
                create_time=time,
                update_time=time,
                start_time=None,
                end_time=None,
                last_sequence=1,
            )
            try:
                with self._sessions.begin() as session:
                    insert_new(session, record, time)
                    item = _outbox.add(session, record, not_before=time)
                return Submitted(record, item)
            except IntegrityError:
                continue  # a concurrent submit with this request_id won: compare with it
        raise AssertionError(f"request_id {request_id} neither inserted nor found")

    def _by_request_id(self, request_id: str) -> TaskRecord | None:
        with self._sessions() as session:
            row = session.execute(
                select(TaskRow.__table__).where(TaskRow.request_id == request_id)
            ).first()
            return None if row is None else record_of(row)

    def get(self, task_id: str) -> TaskRecord:
        """The task; NOT_FOUND when absent."""
        with self._sessions() as session:
            record = load(session, task_id)
        if record is None:
            raise task_not_found(task_id)
        return record

    def page(
        self, *, page_size: int, page_token: str, state: int, kind: int, owner_id: str
    ) -> Page:
        """A page newest first, optionally filtered; tokens are bound to the filter."""
        size = page_size or DEFAULT_PAGE_SIZE
        filter_key = _filter_key(state, kind, owner_id)
        cursor = _paging.decode(page_token, filter_key)
        query = select(TaskRow.__table__)
        if state:
            query = query.where(TaskRow.state == state)
        if kind:
            query = query.where(TaskRow.kind == kind)
        if owner_id:
            query = query.where(TaskRow.owner_id == owner_id)
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
    def check_page_token(page_token: str, *, state: int, kind: int, owner_id: str) -> None:
        """INVALID_ARGUMENT unless ``page_token`` is empty or ours for this filter."""
        _paging.decode(page_token, _filter_key(state, kind, owner_id))

    def events_after(self, task_id: str, after_sequence: int) -> tuple[list[bytes], TaskRecord]:
        """Up to EVENT_BATCH serialized events after ``after_sequence``, and the task."""
        with self._sessions() as session:
            record = load(session, task_id)
            if record is None:
                raise task_not_found(task_id)
            data = list(
                session.scalars(
                    select(TaskEventRow.data)
                    .where(TaskEventRow.task_id == task_id, TaskEventRow.sequence > after_sequence)
                    .order_by(TaskEventRow.sequence)
                    .limit(EVENT_BATCH)
                )
            )
        return [bytes(d) for d in data], record

    # --- operator actions -------------------------------------------------------------

    def cancel(self, task_id: str) -> Changed:
        """PENDING/RETRY_SCHEDULED: CANCELLED now. RUNNING: CANCELLING (the worker stops it).

        CANCELLING stays as it is; an ended task is FAILED_PRECONDITION.
        """

        def decide(session: Session, record: TaskRecord | None, time: datetime) -> Changed:
            if record is None:
                raise task_not_found(task_id)
            if record.state in TERMINAL_STATES:
                raise FailedPrecondition(
                    f"task {task_id} already ended",
                    reason="TASK_ALREADY_ENDED",
                    domain=DOMAIN,
                    metadata={"id": task_id, "state": S.TaskState.Name(record.state)},  # type: ignore[arg-type]
                )
            if record.state == S.TASK_STATE_CANCELLING:
                return Changed(record, None)
            if record.state == S.TASK_STATE_RUNNING:
                after = append(
                    session,
                    record,
                    time,
                    state=S.TASK_STATE_CANCELLING,
                    cancel_requested=True,
                    cancel_time=time,
                )
                return Changed(after, None)
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
            return Changed(after, None)

        return change(self._sessions, task_id, decide)

    def retry(self, task_id: str) -> Changed:
        """A FAILED or CANCELLED task becomes PENDING again as attempt + 1."""

        def decide(session: Session, record: TaskRecord | None, time: datetime) -> Changed:
            if record is None:
                raise task_not_found(task_id)
            if record.state not in (S.TASK_STATE_FAILED, S.TASK_STATE_CANCELLED):
                raise FailedPrecondition(
                    f"task {task_id} is neither failed nor cancelled",
                    reason="TASK_NOT_RETRYABLE",
                    domain=DOMAIN,
                    metadata={"id": task_id, "state": S.TaskState.Name(record.state)},  # type: ignore[arg-type]
                )
            after = append(
                session,
                record,
                time,
                state=S.TASK_STATE_PENDING,
                attempt=record.attempt + 1,
                progress_fraction=0.0,
                progress_message="",
                result=None,
                error=None,
                cancel_requested=False,
                cancel_time=None,
                claim_worker=None,
                claim_expire_time=None,
                claim_time=None,
                deliveries=0,
                auto_retries=0,
                start_time=None,
                end_time=None,
            )
            return Changed(after, _outbox.add(session, after, not_before=time))

        return change(self._sessions, task_id, decide)

    # --- relay ------------------------------------------------------------------------

    def due_publishes(self, limit: int) -> list[OutboxItem]:
        """Outbox rows due for (re)publishing."""
        with self._sessions() as session:
            return _outbox.due(session, now(), limit)

    def published(self, ids: list[int]) -> None:
        """The broker confirmed these publishes."""
        with self._sessions.begin() as session:
            _outbox.remove(session, ids)

    def publish_failed(self, ids: list[int], retry_in_seconds: float) -> None:
        """These publishes failed; the relay tries them again later."""
        with self._sessions.begin() as session:
            _outbox.defer(session, ids, now() + timedelta(seconds=retry_in_seconds))

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
        with self._sessions() as session:
            rows = session.execute(
                select(TaskRow.__table__)
                .where(
                    TaskRow.state.in_([S.TASK_STATE_RUNNING, S.TASK_STATE_CANCELLING]),
                    TaskRow.claim_expire_time < cutoff,
                    ~pending,
                )
                .limit(limit)
            ).all()
        reaped = 0
        for record in (record_of(row) for row in rows):
            with self._sessions.begin() as session:
                moved = session.execute(
                    update(TaskRow)
                    .where(
                        and_(
                            TaskRow.id == record.id,
                            TaskRow.last_sequence == record.last_sequence,
                            TaskRow.claim_expire_time == record.claim_expire_time,
                        )
                    )
                    .values(claim_expire_time=time)
                    .execution_options(synchronize_session=False)
                )
                if moved.rowcount == 1:  # type: ignore[attr-defined]
                    # Due at once: there is no fast path to wait for.
                    grace = timedelta(seconds=_outbox.FAST_PATH_GRACE_SECONDS)
                    _outbox.add(session, record, not_before=time - grace)
                    reaped += 1
        return reaped


__all__ = ["Changed", "Conflict", "Page", "Submitted", "TaskStore", "task_not_found"]
