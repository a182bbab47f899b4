"""What broker fault tests observe: queues and consumers on a private node, the task
database, an exactly-once audit of event logs, and a client submitting at a steady rate.

Every wait is bounded and fails with the stuck tasks, the queues and the processes' log
tails, so a red run says what was left behind and where.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from sqlalchemy import Engine, func, select

from core.db import TaskEventRow, TaskRow
from core.tasks import TERMINAL_STATES
from devtools.broker import BrokerError
from tests._rabbitmq import PrivateRabbit
from tests._support import wait_for
from tests.workers._stack import Stack, outbox_task_ids, submit

# --- the broker -------------------------------------------------------------------------


def queues(rabbit: PrivateRabbit) -> dict[str, tuple[int, int]]:
    """Queue name -> (messages, consumers) on the private node."""
    out = rabbit.ctl("list_queues", "--formatter", "json", "name", "messages", "consumers")
    return {q["name"]: (int(q["messages"]), int(q["consumers"])) for q in json.loads(out)}


def consumers(rabbit: PrivateRabbit, s: Stack) -> tuple[int, int]:
    """(consumers of the stack's work queue, consumers of its servers' notification queues).

    Each worker consumes the work queue once; each server binds one exclusive queue, named
    ``<events exchange>.<random>``, to the events exchange.
    """
    found = queues(rabbit)
    work = found.get(s.env["AGENTIC_TASK_QUEUE"], (0, 0))[1]
    prefix = s.env["AGENTIC_TASK_EVENTS_EXCHANGE"] + "."
    events = sum(c for name, (_, c) in found.items() if name.startswith(prefix))
    return work, events


# --- the database -----------------------------------------------------------------------


def ended_count(engine: Engine, ids: list[str]) -> int:
    """How many of ``ids`` are in a terminal state."""
    with engine.connect() as conn:
        return int(
            conn.scalar(
                select(func.count())
                .select_from(TaskRow)
                .where(TaskRow.id.in_(ids), TaskRow.state.in_(TERMINAL_STATES))
            )
            or 0
        )


def diagnosis(s: Stack, rabbit: PrivateRabbit, ids: list[str]) -> str:
    """Stuck tasks, queue depths and log tails: what a failed wait needs to be understood."""
    with s.db().connect() as conn:
        stuck = conn.execute(
            select(TaskRow.id, TaskRow.state, TaskRow.attempt, TaskRow.deliveries).where(
                TaskRow.id.in_(ids), TaskRow.state.not_in(TERMINAL_STATES)
            )
        ).all()
    outbox = outbox_task_ids(s.db())
    parts = [f"{len(stuck)} of {len(ids)} tasks not ended:"]
    parts += [
        f"  {r.id} {pb.TaskState.Name(r.state)} attempt={r.attempt} deliveries={r.deliveries}"
        f" in_outbox={r.id in outbox}"
        for r in stuck[:20]
    ]
    try:
        parts.append(f"queues (messages, consumers): {queues(rabbit)}")
    except BrokerError as exc:  # the node may be the thing that is down
        parts.append(f"queues: rabbitmqctl failed: {exc}")
    logs = [(f"server {i}", srv.log()) for i, srv in enumerate(s.servers)]
    logs += [(f"worker {i}", w.log()) for i, w in enumerate(s.workers)]
    for name, log in logs:
        parts.append(f"--- {name} (last 25 lines) ---\n" + "\n".join(log.splitlines()[-25:]))
    return "\n".join(parts)


# --- bounded waits ----------------------------------------------------------------------


def wait_all_ended(s: Stack, rabbit: PrivateRabbit, ids: list[str], *, timeout: float) -> None:
    """Until every task of ``ids`` ended; fails naming the stuck ones."""
    try:
        wait_for(
            lambda: ended_count(s.db(), ids) == len(ids),
            timeout=timeout,
            message=f"all {len(ids)} tasks to end",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnosis(s, rabbit, ids)}") from None


def wait_outbox_empty(s: Stack, rabbit: PrivateRabbit, *, timeout: float) -> None:
    """Until every publish is confirmed: the broker, not the outbox, holds every message."""
    try:
        wait_for(lambda: not outbox_task_ids(s.db()), timeout=timeout, message="empty outbox")
    except AssertionError as exc:
        left = sorted(outbox_task_ids(s.db()))
        raise AssertionError(f"{exc}\n{diagnosis(s, rabbit, left)}") from None


def wait_reconnected(
    s: Stack, rabbit: PrivateRabbit, *, workers: int, servers: int, timeout: float
) -> float:
    """Seconds until every worker and server consumes again; fails with what it saw if not."""
    begin = time.monotonic()
    seen: list[tuple[int, int]] = []

    def consuming() -> bool:
        seen.append(consumers(rabbit, s))
        return seen[-1] == (workers, servers)

    try:
        wait_for(consuming, timeout=timeout, message="consumers to come back")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: want (work queue, notification queues) consumers == {(workers, servers)}, "
            f"last seen {seen[-1:]}\n{diagnosis(s, rabbit, [])}"
        ) from None
    return time.monotonic() - begin


# --- exactly once -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ended:
    """What the event log says about one ended task."""

    start_time: datetime
    """When its first claim started it."""
    deliveries: int
    """Claims of its attempt (more than one: a copy was taken over)."""


def audit(engine: Engine, ids: list[str]) -> dict[str, Ended]:
    """Every task SUCCEEDED, with one terminal event, one result and a gap-free log."""
    with engine.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                select(TaskRow.id, TaskRow.state, TaskRow.last_sequence, TaskRow.deliveries).where(
                    TaskRow.id.in_(ids)
                )
            )
        }
        events = conn.execute(
            select(TaskEventRow.task_id, TaskEventRow.sequence, TaskEventRow.data)
            .where(TaskEventRow.task_id.in_(ids))
            .order_by(TaskEventRow.task_id, TaskEventRow.sequence)
        ).all()
    assert set(rows) == set(ids), f"tasks missing from the database: {set(ids) - set(rows)}"
    states = Counter(pb.TaskState.Name(row.state) for row in rows.values())
    assert set(states) <= {"TASK_STATE_SUCCEEDED"}, states
    logs: dict[str, list[pb.TaskEvent]] = {task_id: [] for task_id in ids}
    for task_id, sequence, data in events:
        event = pb.TaskEvent.FromString(bytes(data))
        assert event.sequence == sequence
        logs[task_id].append(event)
    ended: dict[str, Ended] = {}
    for task_id, log in logs.items():
        row = rows[task_id]
        assert [e.sequence for e in log] == list(range(1, row.last_sequence + 1)), task_id
        terminal = [e for e in log if e.terminal]
        assert len(terminal) == 1, f"{task_id}: {len(terminal)} terminal events"
        assert log[-1].terminal, f"{task_id}: events after the terminal one"
        results = [e for e in log if e.state == pb.TASK_STATE_SUCCEEDED]
        assert len(results) == 1, f"{task_id}: result written {len(results)} times"
        task = terminal[0].task
        assert task.probe_result.steps_completed == task.probe.steps, task_id
        ended[task_id] = Ended(
            start_time=task.start_time.ToDatetime(tzinfo=UTC), deliveries=row.deliveries
        )
    return ended


# --- a steady client --------------------------------------------------------------------


@dataclass
class Call:
    """One SubmitProbe: when it was sent, how it ended, how long it took."""

    request_id: str
    sent: float
    """time.monotonic() when it was sent."""
    code: grpc.StatusCode | None = None
    """Set last, once the call returned."""
    task_id: str = ""
    seconds: float = 0.0


class Submitter:
    """Submits identical probes at a steady rate from a background thread until stopped.

    Each call has its own request_id and the deadline of ``tests.workers._stack.submit``;
    ``resubmit`` sends a request_id again with the same request.
    """

    def __init__(
        self,
        stub: tasks_pb2_grpc.TaskServiceStub,
        *,
        per_second: int,
        steps: int,
        step_millis: int,
        owner: str,
    ) -> None:
        self._stub = stub
        self._interval = 1.0 / per_second
        self._steps = steps
        self._step_millis = step_millis
        self._owner = owner
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._futures: list[Future[None]] = []
        # Enough threads that slow submits never lower the rate.
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="submit")
        self._thread = threading.Thread(target=self._run, name="submitter", daemon=True)

    def start(self) -> None:
        """Start sending."""
        self._thread.start()

    def _run(self) -> None:
        # A rate, not a wait for a condition.
        while not self._stop.wait(self._interval):
            call = Call(request_id=str(uuid.uuid4()), sent=time.monotonic())
            with self._lock:
                self._calls.append(call)
            self._futures.append(self._pool.submit(self._one, call))

    def _one(self, call: Call) -> None:
        try:
            call.task_id = self.resubmit(call.request_id)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        call.seconds = time.monotonic() - call.sent
        call.code = code

    def resubmit(self, request_id: str) -> str:
        """Submit the same probe under ``request_id``; the task id (raises grpc.RpcError)."""
        task = submit(
            self._stub,
            steps=self._steps,
            step_millis=self._step_millis,
            owner=self._owner,
            request_id=request_id,
        )
        return task.id

    def sent_since(self, moment: float) -> int:
        """Calls sent at or after ``moment``."""
        with self._lock:
            return sum(c.sent >= moment for c in self._calls)

    def accepted_since(self, moment: float) -> list[str]:
        """Task ids of the calls sent at or after ``moment`` that have returned OK."""
        with self._lock:
            return [c.task_id for c in self._calls if c.sent >= moment and c.task_id]

    def ok(self) -> int:
        """Calls that returned OK so far."""
        with self._lock:
            return sum(c.code == grpc.StatusCode.OK for c in self._calls)

    def stop(self) -> list[Call]:
        """Stop sending; every call with its outcome (each is bounded by its deadline)."""
        self._stop.set()
        self._thread.join(5)
        self._pool.shutdown(wait=True)
        for future in self._futures:
            future.result(0)  # re-raises whatever a call raised besides an RpcError
        with self._lock:
            return list(self._calls)
