"""Task storage for the API side: submit, read, list, cancel, retry, and the relay's rows.

Plain synchronous code that knows nothing about gRPC or the broker; the facade runs it in
the database thread pool. Every change goes through ``_log.change``/``append``: one row
update plus one event per transaction, guarded by ``last_sequence``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from agentic.tasks.v1 import tasks_pb2
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from core.db import ProjectRow, TaskEventRow, TaskOutboxRow, TaskRow
from core.rpc import AlreadyExists, FailedPrecondition, NotFound
from core.tasks import _outbox
from core.tasks._log import Conflict, append, change, now
from core.tasks._outbox import OutboxItem
from core.tasks._record import COLUMNS, TaskRecord, load, record_of, utc
from core.tasks._wire import CANCELLED_STATUS, DOMAIN, TERMINAL_STATES, event_of
from server import paging as _paging
from server.projects import reach_condition as project_reach_condition

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


@dataclass(frozen=True, slots=True)
class NewTask:
    """What a submit asks for."""

    kind: int
    spec: bytes
    owner_id: str
    priority: int
    request_id: str
    request_hash: str
    project_id: str | None = None


def _new_record(request: NewTask, time: datetime) -> TaskRecord:
    return TaskRecord(
        id=str(uuid.uuid4()),
        kind=request.kind,
        state=S.TASK_STATE_PENDING,
        priority=request.priority or S.PRIORITY_NORMAL,
        owner_id=request.owner_id,
        project_id=request.project_id,
        request_id=request.request_id,
        request_hash=request.request_hash,
        spec=request.spec,
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


_INSERT_EVENT = insert(TaskEventRow)


def _insert_new_tasks(dialect: str) -> Insert:
    """``INSERT INTO tasks ... ON CONFLICT (request_id) DO NOTHING RETURNING id``."""
    table = cast(Table, TaskRow.__table__)
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        statement = sqlite.insert(table)
    else:
        raise ValueError(f"no ON CONFLICT insert for the {dialect} dialect")
    return cast(
        Insert,
        statement.on_conflict_do_nothing(index_elements=[table.c.request_id]).returning(table.c.id),
    )


def _postgresql_submit() -> str:
    """Insert new tasks, their first events and their outbox rows in one statement.

    Data-modifying CTEs: the tasks whose request_id is free go in (ON CONFLICT DO
    NOTHING), and only those get an event and an outbox row; the statement returns
    (outbox id, task id) of each. Every value arrives as an array parameter unnested into
    rows, so the text is the same whatever the batch size (psycopg prepares it once), and
    the columns follow ``TaskRecord`` and the table mappings. One statement is atomic on
    its own: it runs in autocommit, one round trip per batch.
    """
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
    tasks = cast(Table, TaskRow.__table__)
    events = cast(Table, TaskEventRow.__table__)
    outbox = cast(Table, TaskOutboxRow.__table__)

    def array(name: str, table: Table, column: str) -> str:
        return f"CAST(%({name})s AS {table.c[column].type.compile(dialect=dialect)}[])"

    def scalar(name: str, table: Table, column: str) -> str:
        return f"CAST(%({name})s AS {table.c[column].type.compile(dialect=dialect)})"

    columns = ", ".join(COLUMNS)
    rows = ", ".join(array(f"t_{name}", tasks, name) for name in COLUMNS)
    return f"""
WITH new_tasks AS (
    INSERT INTO tasks ({columns})
    SELECT * FROM unnest({rows}) AS v({columns})
    ON CONFLICT (request_id) DO NOTHING
    RETURNING id, kind, priority, attempt, last_sequence
), v AS (
    SELECT * FROM unnest(
        {array("t_id", tasks, "id")}, {array("event_data", events, "data")}
    ) AS v(id, data)
), new_events AS (
    INSERT INTO task_events (task_id, sequence, time, data)
    SELECT n.id, n.last_sequence, {scalar("time", events, "time")}, v.data
    FROM new_tasks n JOIN v ON v.id = n.id
)
INSERT INTO task_outbox (task_id, attempt, kind, priority, not_before, relay_time, create_time)
SELECT id, attempt, kind, priority, {scalar("time", outbox, "not_before")},
    {scalar("relay_time", outbox, "relay_time")}, {scalar("time", outbox, "create_time")}
FROM new_tasks
RETURNING id, task_id
"""


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


class TaskStore:
    """Task operations of the API server on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # The submit path uses Core on a plain connection: no ORM unit of work.
        self._engine = engine
        self._insert_tasks = _insert_new_tasks(engine.dialect.name)
        self._submit_sql = _postgresql_submit() if engine.dialect.name == "postgresql" else None

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
        project_id: str | None = None,
    ) -> Submitted:
        """Create the task, its first event and its outbox row in one transaction.

        The same request_id with the same request hash returns the existing task; with a
        different hash it is ALREADY_EXISTS (REQUEST_ID_REUSED).
        """
        request = NewTask(kind, spec, owner_id, priority, request_id, request_hash, project_id)
        result = self.submit_many([request])[0]
        if isinstance(result, AlreadyExists):
            raise result
        return result

    def submit_many(self, requests: Sequence[NewTask]) -> list[Submitted | AlreadyExists]:
        """``submit`` for many requests at once: one transaction, one statement per table.

        Each result is what ``submit`` would give (or raise) for its request, alone. A
        request_id twice in ``requests`` is a resubmit of the first occurrence.
        """
        results: list[Submitted | AlreadyExists | None] = [None] * len(requests)
        todo = list(range(len(requests)))
        for _ in range(3):
            if self._submit_sql is not None:
                # One statement, atomic by itself: autocommit spares BEGIN and COMMIT.
                with self._engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                ) as connection:
                    todo = self._submit_round(connection, requests, todo, results)
            else:
                with self._engine.begin() as connection:
                    todo = self._submit_round(connection, requests, todo, results)
            if not todo:
                return [r for r in results if r is not None]
        raise AssertionError(f"request_ids {[requests[i].request_id for i in todo]} unresolved")

    def _submit_round(
        self,
        connection: Connection,
        requests: Sequence[NewTask],
        todo: list[int],
        results: list[Submitted | AlreadyExists | None],
    ) -> list[int]:
        """Insert what is new, resolve the rest against the rows holding their request_id;
        the indexes left unresolved (their row vanished meanwhile: try again)."""
        time = now()
        first: dict[str, int] = {}  # request_id -> the first request that carries it
        for i in todo:
            first.setdefault(requests[i].request_id, i)
        fresh = [_new_record(requests[i], time) for i in first.values()]
        if self._submit_sql is not None:
            items = self._insert_postgresql(connection, self._submit_sql, fresh, time)
        else:
            items = self._insert_statements(connection, fresh, time)
        new = [r for r in fresh if r.id in items]
        # The read happens only on conflict: a fresh request_id costs no query here.
        found = self._by_request_id(connection, [r.request_id for r in fresh if r.id not in items])
        found.update({r.request_id: r for r in new})
        left: list[int] = []
        for i in todo:
            request = requests[i]
            record = found.get(request.request_id)
            if record is None:
                left.append(i)
            elif record.id in items and first[request.request_id] == i:
                results[i] = Submitted(record, items[record.id])
            elif record.request_hash != request.request_hash:
                results[i] = AlreadyExists(
                    f"request_id {request.request_id} was used for a different request",
                    reason="REQUEST_ID_REUSED",
                    domain=DOMAIN,
                    metadata={"request_id": request.request_id, "task_id": record.id},
                )
            else:
                results[i] = Submitted(record, None)
        return left

    def _insert_statements(
        self, connection: Connection, fresh: list[TaskRecord], time: datetime
    ) -> dict[str, OutboxItem]:
        """Insert the tasks whose request_id is free, their events and outbox rows: one
        statement per table. The outbox items of the inserted tasks, by task id."""
        # ON CONFLICT DO NOTHING: a request_id already taken inserts nothing instead of
        # failing the whole batch; RETURNING tells which rows went in.
        inserted = set(
            connection.scalars(
                self._insert_tasks, [{name: getattr(r, name) for name in COLUMNS} for r in fresh]
            )
        )
        new = [r for r in fresh if r.id in inserted]
        if new:
            connection.execute(
                _INSERT_EVENT,
                [
                    {
                        "task_id": r.id,
                        "sequence": r.last_sequence,
                        "time": time,
                        "data": event_of(r, time).SerializeToString(),
                    }
                    for r in new
                ],
            )
        return _outbox.add_many(connection, new, not_before=time)

    @staticmethod
    def _insert_postgresql(
        connection: Connection, sql: str, fresh: list[TaskRecord], time: datetime
    ) -> dict[str, OutboxItem]:
        """``_insert_statements`` as one statement (see ``_postgresql_submit``)."""
        params: dict[str, object] = {
            f"t_{name}": [getattr(r, name) for r in fresh] for name in COLUMNS
        }
        params["event_data"] = [event_of(r, time).SerializeToString() for r in fresh]
        params["time"] = time
        params["relay_time"] = time + timedelta(seconds=_outbox.FAST_PATH_GRACE_SECONDS)
        by_id = {r.id: r for r in fresh}
        items: dict[str, OutboxItem] = {}
        for outbox_id, task_id in connection.exec_driver_sql(sql, params):
            record = by_id[task_id]
            items[task_id] = OutboxItem(
                id=outbox_id,
                task_id=task_id,
                attempt=record.attempt,
                kind=record.kind,
                priority=record.priority,
                not_before=time,
            )
        return items

    @staticmethod
    def _by_request_id(connection: Connection, request_ids: list[str]) -> dict[str, TaskRecord]:
        if not request_ids:
            return {}
        rows = connection.execute(
            select(TaskRow.__table__).where(TaskRow.request_id.in_(set(request_ids)))
        )
        return {record.request_id: record for record in map(record_of, rows)}

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
                moved = session.execute(
                    update(TaskRow)
                    .where(
                        TaskRow.id == record.id,
                        TaskRow.last_sequence == record.last_sequence,
                        *still(record),
                    )
                    .values(**mark)
                    .execution_options(synchronize_session=False)
                )
                if moved.rowcount == 1:  # type: ignore[attr-defined]
                    _outbox.add(session, record, not_before=due)
                    queued += 1
        return queued

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


@dataclass(frozen=True, slots=True)
class Gauges:
    """A snapshot of the task tables for the metrics endpoint."""

    active: dict[tuple[int, int], int]
    """(state, kind) -> tasks, for the states that are not terminal."""
    outbox_rows: int
    """Publishes not yet confirmed by the broker."""
    oldest_pending_time: datetime | None
    """Submit time of the oldest PENDING task."""


__all__ = [
    "Changed",
    "Conflict",
    "Gauges",
    "NewTask",
    "Page",
    "Submitted",
    "TaskStore",
    "task_not_found",
]
