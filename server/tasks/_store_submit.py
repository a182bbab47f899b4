"""Submits: a task, its first event and its outbox row, committed together, many at once.

The submit path is the API server's hot path, so it uses Core on a plain connection (no
ORM unit of work) and resolves a whole batch of requests in one round: on PostgreSQL one
data-modifying statement per batch, elsewhere one statement per table.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from agentic.tasks.v1 import tasks_pb2
from sqlalchemy import Connection, Engine, Insert, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from core.db import TaskEventRow, TaskOutboxRow, TaskRow
from core.rpc import AlreadyExists
from core.tasks import _outbox
from core.tasks._log import event_data, insert_events, now
from core.tasks._outbox import OutboxItem
from core.tasks._record import COLUMNS, FRESH_ATTEMPT, TaskRecord, record_of
from core.tasks._wire import DOMAIN

S = tasks_pb2  # states and kinds read better as S.TASK_STATE_RUNNING


@dataclass(frozen=True, slots=True)
class Written:
    """A task as a write left it (a submit, CancelTask, RetryTask), and the publish to
    attempt (None when there is nothing to publish: a resubmit, a cancel)."""

    record: TaskRecord
    publish: OutboxItem | None


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
    # NewTask carries the facade's plain numbers; the record types them as their enums.
    return TaskRecord(
        id=str(uuid.uuid4()),
        kind=S.TaskKind.ValueType(request.kind),
        state=S.TASK_STATE_PENDING,
        priority=S.Priority.ValueType(request.priority or S.PRIORITY_NORMAL),
        owner_id=request.owner_id,
        project_id=request.project_id,
        request_id=request.request_id,
        request_hash=request.request_hash,
        spec=request.spec,
        attempt=1,
        create_time=time,
        update_time=time,
        **FRESH_ATTEMPT,
        last_sequence=1,
    )


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
    its own: it runs in autocommit, one round trip per batch. ``new_events`` is
    ``core.tasks._log.insert_events`` in set form (its data from ``_log.event_data``).
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


class Submits:
    """Submits of the API server on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        # The submit path uses Core on a plain connection: no ORM unit of work.
        self._engine = engine
        self._insert_tasks = _insert_new_tasks(engine.dialect.name)
        self._submit_sql = _postgresql_submit() if engine.dialect.name == "postgresql" else None

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
    ) -> Written:
        """Create the task, its first event and its outbox row in one transaction.

        The same request_id with the same request hash returns the existing task; with a
        different hash it is ALREADY_EXISTS (REQUEST_ID_REUSED).
        """
        request = NewTask(kind, spec, owner_id, priority, request_id, request_hash, project_id)
        result = self.submit_many([request])[0]
        if isinstance(result, AlreadyExists):
            raise result
        return result

    def submit_many(self, requests: Sequence[NewTask]) -> list[Written | AlreadyExists]:
        """``submit`` for many requests at once: one transaction, one statement per table.

        Each result is what ``submit`` would give (or raise) for its request, alone. A
        request_id twice in ``requests`` is a resubmit of the first occurrence.
        """
        results: list[Written | AlreadyExists | None] = [None] * len(requests)
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
        results: list[Written | AlreadyExists | None],
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
                results[i] = Written(record, items[record.id])
            elif record.request_hash != request.request_hash:
                results[i] = AlreadyExists(
                    f"request_id {request.request_id} was used for a different request",
                    reason="REQUEST_ID_REUSED",
                    domain=DOMAIN,
                    metadata={"request_id": request.request_id, "task_id": record.id},
                )
            else:
                results[i] = Written(record, None)
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
        insert_events(connection, new, time)
        return _outbox.add_many(connection, new, not_before=time)

    @staticmethod
    def _insert_postgresql(
        connection: Connection, sql: str, fresh: list[TaskRecord], time: datetime
    ) -> dict[str, OutboxItem]:
        """``_insert_statements`` as one statement (see ``_postgresql_submit``)."""
        params: dict[str, object] = {
            f"t_{name}": [getattr(r, name) for r in fresh] for name in COLUMNS
        }
        params["event_data"] = [event_data(r, time) for r in fresh]
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
