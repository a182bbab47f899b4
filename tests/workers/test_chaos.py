"""kill -9 workers again and again while hundreds of short tasks run.

Every accepted task must reach a terminal state, with exactly one terminal event and one
result write, and an event log without gaps or repeats, however often the process
running it died.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from sqlalchemy import func, select

from core.db import TaskEventRow, TaskRow
from tests._processes import Worker
from tests._support import fresh_database, wait_for
from tests.workers._stack import private_vhost, stack, submit

TASKS = 300
KILLS = 8


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A private vhost for this module."""
    with private_vhost() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of each backend."""
    with fresh_database(request.param, tmp_path, "chaos") as url:
        yield url


@pytest.mark.timeout(180)
def test_every_task_ends_exactly_once_while_workers_are_killed(
    broker_url: str, database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(7)
    with stack(
        tmp_path,
        broker_url,
        database_url,
        AGENTIC_CLAIM_LEASE_SECONDS="2",
        AGENTIC_TASK_MAX_DELIVERIES="50",
        AGENTIC_TASK_REAP_AFTER_SECONDS="10",
        AGENTIC_LOG_LEVEL="WARNING",
    ) as s:
        stub = s.start_server()
        live: list[Worker] = [s.start_worker(), s.start_worker()]
        with ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit(submit, stub, steps=3, step_millis=15, owner="chaos")
                for _ in range(TASKS)
            ]
            # Kill while the submits and the first tasks are in flight.
            kills = 0
            for _ in range(KILLS):
                # A chaos schedule, not a wait for anything: 0.5-1 s between crashes.
                time.sleep(rng.uniform(0.5, 1.0))
                victim = live.pop(rng.randrange(len(live)))
                victim.kill()
                kills += 1
                live.append(s.start_worker(wait=False))
            accepted = [f.result(timeout=60).id for f in futures]
        assert len(set(accepted)) == TASKS
        engine = s.db()
        terminal = [pb.TASK_STATE_SUCCEEDED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED]

        def ended() -> int:
            with engine.connect() as conn:
                return int(
                    conn.scalar(
                        select(func.count()).select_from(TaskRow).where(TaskRow.state.in_(terminal))
                    )
                    or 0
                )

        try:
            wait_for(lambda: ended() == TASKS, timeout=120, message=f"all {TASKS} tasks to end")
        except AssertionError:
            with engine.connect() as conn:
                stuck = conn.execute(
                    select(
                        TaskRow.id,
                        TaskRow.state,
                        TaskRow.deliveries,
                        TaskRow.claim_expire_time,
                        TaskRow.last_sequence,
                    ).where(TaskRow.state.not_in(terminal))
                ).all()
            raise AssertionError(f"{len(stuck)} tasks did not end: {stuck[:5]}") from None

        with engine.connect() as conn:
            rows = conn.execute(
                select(TaskRow.id, TaskRow.state, TaskRow.last_sequence, TaskRow.deliveries)
            ).all()
            events = conn.execute(
                select(TaskEventRow.task_id, TaskEventRow.sequence, TaskEventRow.data)
            ).all()
        by_task: dict[str, list[pb.TaskEvent]] = {}
        for task_id, sequence, data in events:
            event = pb.TaskEvent.FromString(bytes(data))
            assert event.sequence == sequence
            by_task.setdefault(task_id, []).append(event)
        states = Counter(pb.TaskState.Name(row.state) for row in rows)
        assert states == {"TASK_STATE_SUCCEEDED": TASKS}, states
        redelivered = 0
        for row in rows:
            log = sorted(by_task[row.id], key=lambda e: e.sequence)
            assert [e.sequence for e in log] == list(range(1, row.last_sequence + 1))
            assert sum(e.terminal for e in log) == 1, f"{row.id}: terminal events"
            assert log[-1].terminal
            results = [e for e in log if e.state == pb.TASK_STATE_SUCCEEDED]
            assert len(results) == 1, f"{row.id}: result written {len(results)} times"
            assert results[0].task.probe_result.steps_completed == 3
            redelivered += row.deliveries > 1
        print(f"chaos: {kills} kills, {redelivered} of {TASKS} tasks ran more than once")
        assert redelivered > 0, "no kill hit a running task; the test proved nothing"
