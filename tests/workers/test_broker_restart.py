"""kill -9 the task pipeline's RabbitMQ node, restart it on the same data: nothing is lost.

The node is a private one (``tests._rabbitmq.PrivateRabbit``: its own port, data directory
and cookie), never the machine's shared broker. A real API server and real worker processes
point at it, and the test restarts neither:

- 100 tasks are confirmed into the queue, a worker starts on them, and the broker is killed
  with most still queued and some running. After the restart every task ends exactly once.
- A task running when the broker dies keeps going: it needs only the database, and its
  progress notifications are best effort.
- A client submits at ~20/s while the broker is killed and restarted. Submit commits to the
  database before it publishes, so submits during the outage are OK too and sit in the
  outbox until the relay publishes them after the restart; every OK task ends exactly once,
  and resubmitting every request_id afterwards returns the same task.
- Each time, the workers and the server reconnect by themselves (consumers reappear on the
  work queue and on the server's notification queue) within ``RECONNECT_SECONDS``.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from sqlalchemy import func, select

from core.db import TaskRow
from devtools.broker import process_alive
from tests._rabbitmq import PrivateRabbit, listener_pid
from tests._support import health_status, postgres_database, wait_for
from tests.workers._broker_faults import (
    Submitter,
    audit,
    ended_count,
    queues,
    wait_all_ended,
    wait_outbox_empty,
    wait_reconnected,
)
from tests.workers._stack import Stack, get, outbox_task_ids, stack, submit, wait_state

# 30 min, RabbitMQ's default: the workers refuse to start unless the probe kind's hard limit
# (960 s) plus its longest retry countdown (300 s) and Celery's margin stay below it.
CONSUMER_TIMEOUT_SECONDS = 1800
# Workers and servers must consume again this soon after the node is back. Celery's
# reconnect backs off 2, 4, 6 ... s from the moment it lost the broker: a few seconds of
# outage plus that schedule stays well inside.
RECONNECT_SECONDS = 30.0
DRAIN_SECONDS = 45.0
OWNER = "broker-restart"


@pytest.fixture(scope="module")
def rabbit() -> Iterator[PrivateRabbit]:
    """A private node for this module; afterwards the shared node must be as it was."""
    shared = listener_pid(5672)
    with PrivateRabbit(consumer_timeout_ms=CONSUMER_TIMEOUT_SECONDS * 1000) as node:
        yield node
    if shared is not None:
        assert process_alive(shared), "the shared RabbitMQ node died"
        assert listener_pid(5672) == shared, "the shared RabbitMQ node was restarted"


@contextmanager
def _pipeline(tmp_path: Path, rabbit: PrivateRabbit, database_url: str) -> Iterator[Stack]:
    """A stack with its own queue names on the private node, which runs on entry."""
    if not rabbit.node.running:  # an earlier test failed while the node was down
        rabbit.restart()
    with stack(
        tmp_path,
        rabbit.url,
        database_url,
        AGENTIC_BROKER_CONSUMER_TIMEOUT_SECONDS=str(CONSUMER_TIMEOUT_SECONDS),
    ) as s:
        yield s


# --- 1: queued and running tasks survive the broker's crash -----------------------------

BATCH = 100


@pytest.mark.timeout(80)
def test_queued_tasks_survive_broker_kill(rabbit: PrivateRabbit, tmp_path: Path) -> None:
    with _pipeline(tmp_path, rabbit, f"sqlite:///{tmp_path / 'tasks.db'}") as s:
        stub = s.start_server()
        with ThreadPoolExecutor(8) as pool:
            ids = list(
                pool.map(
                    lambda _: submit(stub, steps=2, step_millis=40, owner=OWNER).id, range(BATCH)
                )
            )
        # Confirmed publishes leave the outbox: from now on only the broker holds them.
        wait_outbox_empty(s, rabbit, timeout=20)
        # At least BATCH: a slow fast path may race the relay, and a second copy is harmless.
        messages, consumers = queues(rabbit)[s.env["AGENTIC_TASK_QUEUE"]]
        assert messages >= BATCH, messages
        assert consumers == 0, consumers

        worker = s.start_worker(concurrency=2)
        wait_for(lambda: ended_count(s.db(), ids) >= 10, timeout=30, message="10 tasks to end")
        rabbit.kill()
        ended_at_kill = ended_count(s.db(), ids)
        # Most must still be queued, or the crash tested little.
        assert ended_at_kill <= BATCH // 2, f"{ended_at_kill} of {BATCH} ended before the kill"
        rabbit.restart()
        reconnect = wait_reconnected(s, rabbit, workers=1, servers=1, timeout=RECONNECT_SECONDS)
        begin = time.monotonic()
        wait_all_ended(s, rabbit, ids, timeout=DRAIN_SECONDS)
        drain = time.monotonic() - begin

        ended = audit(s.db(), ids)
        assert worker.process.poll() is None, f"the worker exited:\n{worker.log()}"
        assert s.servers[0].process.poll() is None, f"the server exited:\n{s.servers[0].log()}"
        claimed_twice = sum(e.deliveries > 1 for e in ended.values())
        # Celery logs every delivery; more than BATCH means the restarted broker redelivered
        # messages (unacknowledged, or acknowledged but not yet on disk), found already done.
        deliveries = worker.log().count("] received")
        print(
            f"broker killed with {BATCH - ended_at_kill} of {BATCH} tasks not ended: "
            f"reconnected {reconnect:.1f}s after the restart, drained in {drain:.1f}s, "
            f"{deliveries} deliveries, {claimed_twice} tasks claimed twice"
        )


# --- 2: a running task needs only the database ------------------------------------------

# 20 steps of 100 ms: 2 s of work and ~21 progress and end notifications. While the broker
# is down a notification can only fail; failing must cost the task little, not a reconnect
# attempt (~2 s) per report. The bound leaves room for two such attempts.
STALL_STEPS = 20
STALL_STEP_MILLIS = 100
STALL_BOUND_SECONDS = 8.0


@pytest.mark.timeout(60)
def test_running_task_keeps_going_while_broker_is_down(
    rabbit: PrivateRabbit, tmp_path: Path
) -> None:
    with _pipeline(tmp_path, rabbit, f"sqlite:///{tmp_path / 'tasks.db'}") as s:
        stub = s.start_server()
        s.start_worker(concurrency=1)
        task = submit(stub, steps=STALL_STEPS, step_millis=STALL_STEP_MILLIS, owner=OWNER)
        wait_state(stub, task.id, {pb.TASK_STATE_RUNNING})
        rabbit.kill()
        try:
            wait_for(
                lambda: ended_count(s.db(), [task.id]) == 1,
                timeout=STALL_BOUND_SECONDS,
                message="the running task to end while the broker is down",
            )
        except AssertionError as exc:
            now = get(stub, task.id)
            raise AssertionError(
                f"{exc}: {STALL_STEPS * STALL_STEP_MILLIS / 1000:g} s of work reached "
                f"{now.progress.fraction:.0%} ({pb.TaskState.Name(now.state)}) in "
                f"{STALL_BOUND_SECONDS:g} s of broker outage; each progress report waits out "
                "a broker reconnect (workers/app.py _notify)"
            ) from None
        finally:
            rabbit.restart()
        wait_reconnected(s, rabbit, workers=1, servers=1, timeout=RECONNECT_SECONDS)
        audit(s.db(), [task.id])


# --- 3: submits while the broker is down ------------------------------------------------

SUBMITS_PER_SECOND = 20
# Half the client deadline (tests.workers._stack.TIMEOUT). While the broker is down, today's
# submits take up to ~2 s: the publisher's reconnect attempt sleeps kombu's 2 s retry interval.
SLOW_SUBMIT_SECONDS = 1.5


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards)."""
    with postgres_database(tmp_path / "pg") as url:
        yield url


@pytest.mark.timeout(80)
def test_submits_during_broker_outage_are_delivered_after_it(
    rabbit: PrivateRabbit, tmp_path: Path, postgres_url: str
) -> None:
    with _pipeline(tmp_path, rabbit, postgres_url) as s:
        stub = s.start_server()
        pids = [s.start_worker().process.pid, s.start_worker().process.pid]
        submitter = Submitter(
            stub, per_second=SUBMITS_PER_SECOND, steps=2, step_millis=20, owner=OWNER
        )
        submitter.start()
        try:
            wait_for(lambda: submitter.ok() >= 30, timeout=20, message="30 submits before the kill")
            rabbit.kill()
            killed = time.monotonic()
            address = s.servers[0].address
            # Health tells the outage apart: the broker is down, the server still serves.
            wait_for(
                lambda: health_status(address, "dependency:broker") == "NOT_SERVING",
                timeout=10,
                message="health dependency:broker to report the outage",
            )
            assert health_status(address, "") == "SERVING", "Submit still works: the server serves"
            wait_for(
                lambda: submitter.sent_since(killed) >= 30,
                timeout=10,
                message="30 submits during the outage",
            )
            restarting = datetime.now(UTC)
            # In this order: each of these committed its outbox row before it returned.
            accepted_in_outage = submitter.accepted_since(killed)
            in_outbox = outbox_task_ids(s.db())
            rabbit.restart()
            back = time.monotonic()
            wait_for(
                lambda: submitter.sent_since(back) >= 20,
                timeout=10,
                message="20 submits after the restart",
            )
            wait_for(
                lambda: health_status(address, "dependency:broker") == "SERVING",
                timeout=20,
                message="health dependency:broker to recover after the restart",
            )
        finally:
            calls = submitter.stop()

        phases = {
            "before": [c for c in calls if c.sent < killed],
            "outage": [c for c in calls if killed <= c.sent < back],
            "after": [c for c in calls if c.sent >= back],
        }
        counts = {
            phase: Counter(c.code.name if c.code else "NONE" for c in group)
            for phase, group in phases.items()
        }
        latency = {
            phase: [round(x, 2) for x in statistics.quantiles([c.seconds for c in group], n=10)]
            + [round(max(c.seconds for c in group), 2)]
            for phase, group in phases.items()
        }
        print(f"submits by phase: {counts}; latency deciles and max (s): {latency}")
        unexpected = [
            (c.request_id, c.code)
            for c in calls
            if c.code not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)
        ]
        assert not unexpected, f"submits ended neither OK nor UNAVAILABLE: {unexpected[:5]}"
        # Submit commits before it publishes: a broker outage does not fail it...
        assert all(c.code == grpc.StatusCode.OK for c in phases["outage"]), counts["outage"]
        # ... and its fast-path publish fails well inside the deadline instead of hanging.
        slow = [
            (c.request_id, round(c.seconds, 2)) for c in calls if c.seconds > SLOW_SUBMIT_SECONDS
        ]
        assert not slow, f"submits slower than {SLOW_SUBMIT_SECONDS}s: {slow[:5]}"
        # Accepted while the broker was dead: only the outbox held them.
        assert accepted_in_outage, "no submit returned during the outage"
        missing = set(accepted_in_outage) - in_outbox
        assert not missing, f"tasks accepted during the outage without an outbox row: {missing}"

        reconnect = wait_reconnected(s, rabbit, workers=2, servers=1, timeout=RECONNECT_SECONDS)
        accepted = [c.task_id for c in calls if c.code == grpc.StatusCode.OK]
        wait_all_ended(s, rabbit, accepted, timeout=DRAIN_SECONDS)
        ended = audit(s.db(), accepted)
        early = [
            (c.task_id, ended[c.task_id].start_time)
            for c in phases["outage"]
            if ended[c.task_id].start_time < restarting
        ]
        assert not early, f"tasks submitted during the outage started before the restart: {early}"
        wait_outbox_empty(s, rabbit, timeout=10)
        # The server's publisher is connected again: a new submit takes the fast path.
        canary = submit(stub, steps=1, step_millis=1, owner="canary")
        assert canary.id not in outbox_task_ids(s.db()), "the fast path still fails"

        # Idempotency after recovery: every request_id again, failed ones included.
        again = {c.request_id: submitter.resubmit(c.request_id) for c in calls}
        changed = [c.request_id for c in calls if c.task_id and again[c.request_id] != c.task_id]
        assert not changed, f"resubmits returned another task: {changed[:5]}"
        retried = sorted(set(again.values()) - set(accepted))
        wait_all_ended(s, rabbit, retried, timeout=DRAIN_SECONDS)
        audit(s.db(), retried)
        with s.db().connect() as conn:
            owned = conn.scalar(
                select(func.count()).select_from(TaskRow).where(TaskRow.owner_id == OWNER)
            )
        assert owned == len(calls), f"{owned} tasks for {len(calls)} request ids"
        assert [w.process.pid for w in s.workers] == pids, "a worker was started again"
        dead = [w.log() for w in s.workers if w.process.poll() is not None]
        assert not dead, f"workers exited:\n{dead}"
        print(
            f"reconnected {reconnect:.1f}s after the restart; {len(accepted)} accepted, "
            f"{len(retried)} failed and were resubmitted; every task ended once"
        )
