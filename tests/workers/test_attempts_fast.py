"""The worker's fast path: writes from the known record, cheap cancel checks, one watchdog
thread per process, and notifications that never wait on the broker.

Each store test runs on SQLite and on PostgreSQL (where a transition is one statement on
a connection the thread keeps); whatever the path, the event log stays contiguous and a
stale record never overwrites a newer one.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from kombu.connection import Connection
from kombu.entity import Queue
from sqlalchemy import select

from core.db import TaskEventRow, make_engine, migrate
from core.tasks import AttemptStore, ClaimOutcome, OutboxItem
from core.tasks._broker import events_exchange, parse_notification
from server.tasks import TaskStore
from tests._support import postgres_database, wait_for
from tests.workers._stack import private_vhost, submit_to_store
from workers import _context
from workers._context import TaskContext
from workers._execute import Outcome, Runtime, Verdict, execute
from workers._notify import Notifier
from workers._registry import REGISTRY

PROBE = REGISTRY[pb.TASK_KIND_PROBE]


class Db:
    """A migrated database with both stores."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url, pool_size=4)
        migrate(self.engine)
        self.tasks = TaskStore(self.engine)
        self.attempts = AttemptStore(self.engine)
        self.runtimes: list[Runtime] = []

    def close(self) -> None:
        """Stop the watchdog threads (they hand back their kept connections), then the pool."""
        for runtime in self.runtimes:
            runtime.watchdogs.stop()
        self.attempts.close()
        self.engine.dispose()

    def submit(self, steps: int = 1) -> str:
        return submit_to_store(self.tasks, pb.ProbeSpec(steps=steps, step_millis=0))

    def events(self, task_id: str) -> list[pb.TaskEvent]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(TaskEventRow.sequence, TaskEventRow.data)
                .where(TaskEventRow.task_id == task_id)
                .order_by(TaskEventRow.sequence)
            ).all()
        events = [pb.TaskEvent.FromString(bytes(data)) for _, data in rows]
        assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1)), "gap or repeat"
        assert [e.sequence for e in events] == [seq for seq, _ in rows]
        return events

    def runtime(self, **overrides: object) -> Runtime:
        def publish(item: OutboxItem) -> bool:
            return True

        options: dict[str, object] = {
            "store": self.attempts,
            "lease_seconds": 3.0,
            "cancel_grace_seconds": 5.0,
            "max_deliveries": 3,
            "notify": lambda task_id, seq: None,
            "publish": publish,
            "kill_self": lambda: None,
            **overrides,
        }
        runtime = Runtime(**options)  # type: ignore[arg-type]  # a dict of mixed values: object
        self.runtimes.append(runtime)
        return runtime


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A fresh database of each backend."""
    if request.param == "sqlite":
        database = Db(f"sqlite:///{tmp_path / 'fast.db'}")
        yield database
        database.close()
    else:
        with postgres_database(tmp_path / "pg") as url:
            database = Db(url)
            try:
                yield database
            finally:
                database.close()


def test_writes_from_the_known_record_and_redecides_after_a_cancel(db: Db) -> None:
    task_id = db.submit()
    claim = db.attempts.claim(task_id, 1, worker="w", lease_seconds=30, max_deliveries=3)
    assert claim.outcome is ClaimOutcome.RUN
    assert claim.record is not None
    first = db.attempts.progress(
        task_id, 1, worker="w", fraction=0.5, message="half", lease_seconds=30, known=claim.record
    )
    assert first is not None
    assert first.last_sequence == 3
    assert db.tasks.cancel(task_id).record.state == pb.TASK_STATE_CANCELLING  # sequence 4
    # ``first`` is stale now: the write must lose the race, re-read and decide again.
    second = db.attempts.progress(
        task_id, 1, worker="w", fraction=0.75, message="more", lease_seconds=30, known=first
    )
    assert second is not None
    assert (second.last_sequence, second.cancel_requested) == (5, True)
    ended = db.attempts.finish(task_id, 1, worker="w", result=b"", known=second)
    assert ended is not None
    assert ended.state == pb.TASK_STATE_CANCELLED
    events = db.events(task_id)
    assert [e.state for e in events] == [
        pb.TASK_STATE_PENDING,
        pb.TASK_STATE_RUNNING,
        pb.TASK_STATE_RUNNING,
        pb.TASK_STATE_CANCELLING,
        pb.TASK_STATE_CANCELLING,
        pb.TASK_STATE_CANCELLED,
    ]
    assert events[4].progress.message == "more"
    assert db.tasks.get(task_id).last_sequence == 6


def test_a_stale_copy_writes_nothing_after_a_takeover(db: Db) -> None:
    task_id = db.submit()
    old = db.attempts.claim(task_id, 1, worker="old", lease_seconds=0, max_deliveries=3)
    new = db.attempts.claim(task_id, 1, worker="new", lease_seconds=30, max_deliveries=3)
    assert old.outcome is new.outcome is ClaimOutcome.RUN
    assert old.record is not None
    assert new.record is not None
    assert (
        db.attempts.progress(
            task_id, 1, worker="old", fraction=1, message="x", lease_seconds=30, known=old.record
        )
        is None
    )
    assert (
        db.attempts.finish(
            task_id,
            1,
            worker="old",
            result=pb.ProbeResult(steps_completed=9).SerializeToString(),
            known=old.record,
        )
        is None
    )
    assert db.attempts.renew(task_id, 1, worker="old", lease_seconds=30) is None
    renewed = db.attempts.renew(task_id, 1, worker="new", lease_seconds=60)
    assert renewed is not None
    assert renewed.last_sequence == new.record.last_sequence
    assert renewed.claim_expire_time is not None
    assert new.record.claim_expire_time is not None
    assert renewed.claim_expire_time > new.record.claim_expire_time
    # A renewal bumps no sequence, so the known record of the holder is still current.
    done = db.attempts.finish(task_id, 1, worker="new", result=b"", known=new.record)
    assert done is not None
    assert done.state == pb.TASK_STATE_SUCCEEDED
    assert [e.state for e in db.events(task_id)][-1] == pb.TASK_STATE_SUCCEEDED
    assert db.tasks.get(task_id).deliveries == 2


def test_no_op_probes_run_through_one_watchdog_thread(db: Db) -> None:
    notified: list[tuple[str, int]] = []
    runtime = db.runtime(notify=lambda task_id, seq: notified.append((task_id, seq)))
    ids = [db.submit() for _ in range(20)]
    before = set(threading.enumerate())
    for task_id in ids:
        assert execute(runtime, PROBE, task_id, 1) == Outcome(Verdict.ACK)
    for task_id in ids:
        assert [e.state for e in db.events(task_id)] == [
            pb.TASK_STATE_PENDING,
            pb.TASK_STATE_RUNNING,
            pb.TASK_STATE_RUNNING,
            pb.TASK_STATE_SUCCEEDED,
        ]
    assert notified == [(t, seq) for t in ids for seq in (2, 3, 4)]
    # Other runtimes' (idle) watchdogs may still be around; this one started one thread.
    started = [t for t in set(threading.enumerate()) - before if t.name == "watchdog"]
    assert len(started) == 1, started


def test_the_shared_watchdog_renews_the_lease_of_a_running_attempt(db: Db) -> None:
    task_id = db.submit()
    renewed = threading.Event()

    def waits_for_a_renewal(spec: pb.ProbeSpec, context: TaskContext) -> pb.ProbeResult:
        claimed = db.tasks.get(task_id).claim_expire_time
        assert claimed is not None

        def later() -> bool:
            now = db.tasks.get(task_id).claim_expire_time
            return now is not None and now > claimed

        wait_for(later, timeout=5, message="the watchdog to renew the lease")
        renewed.set()
        return pb.ProbeResult(steps_completed=1)

    runtime = db.runtime(lease_seconds=1.5)  # renewed every 0.5 s
    assert execute(runtime, replace(PROBE, run=waits_for_a_renewal), task_id, 1).verdict is (
        Verdict.ACK
    )
    assert renewed.is_set()
    assert db.tasks.get(task_id).state == pb.TASK_STATE_SUCCEEDED


def test_cancel_checks_read_the_database_at_most_every_interval(db: Db) -> None:
    task_id = db.submit(steps=3)
    claim = db.attempts.claim(task_id, 1, worker="w", lease_seconds=30, max_deliveries=3)
    reads: list[str] = []

    class Counting(AttemptStore):
        def cancel_requested(self, task_id: str) -> bool:
            reads.append(task_id)
            return super().cancel_requested(task_id)

    store = Counting(db.engine)
    context = TaskContext(
        task_id=task_id,
        attempt=1,
        worker="w",
        store=store,
        lease_seconds=30,
        notify=lambda task_id, seq: None,
        record=claim.record,
    )
    for _ in range(100):  # a tight loop: the claim's fresh record answers
        assert not context.cancelled()
    assert len(reads) <= 1
    db.tasks.cancel(task_id)
    begin = time.monotonic()
    wait_for(context.cancelled, timeout=5, message="the cancel flag to be read")
    assert time.monotonic() - begin < _context.CANCEL_CHECK_SECONDS + 1.0
    # A progress report learns of the cancellation from its own write.
    fresh = TaskContext(
        task_id=task_id,
        attempt=1,
        worker="w",
        store=store,
        lease_seconds=30,
        notify=lambda task_id, seq: None,
        record=claim.record,  # stale: from before the cancel
    )
    count = len(reads)
    fresh.report_progress(0.5, "half")
    assert fresh.cancelled()
    assert len(reads) == count
    store.close()


@pytest.mark.timeout(60)
def test_notifications_arrive_and_never_wait_on_a_dead_broker() -> None:
    # Nothing listens on port 1: connects fail at once, in the background.
    dead = Notifier("amqp://guest:guest@127.0.0.1:1//", events_exchange("nowhere"))
    begin = time.monotonic()
    for seq in range(1, 2001):
        dead.notify("t", seq)
    assert time.monotonic() - begin < 1.0, "notify waited on the broker"

    with private_vhost() as url:
        exchange = events_exchange(f"test.events.{uuid.uuid4().hex[:8]}")
        received: list[tuple[str, int]] = []
        with Connection(url) as conn:
            channel = conn.channel()
            exchange.bind(channel).declare()
            queue = Queue(f"q.{uuid.uuid4().hex[:8]}", exchange, exclusive=True).bind(channel)
            queue.declare()
            notifier = Notifier(url, exchange)
            notifier.notify("a", 2)  # the first one waits for the background connect
            wait_for(lambda: notifier._producer is not None, timeout=10, message="connected")
            for seq in (3, 4):
                notifier.notify("a", seq)
            notifier.notify("b", 7)

            def drained() -> bool:
                message = queue.get(no_ack=True)
                while message is not None:
                    parsed = parse_notification(message.body)
                    assert parsed is not None
                    received.append(parsed)
                    message = queue.get(no_ack=True)
                return len(received) >= 4

            try:
                wait_for(drained, timeout=10, message=f"4 notifications, got {received}")
            finally:
                notifier.close()
            assert received == [("a", 2), ("a", 3), ("a", 4), ("b", 7)]
