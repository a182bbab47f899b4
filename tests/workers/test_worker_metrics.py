"""The worker's ``/metrics``: what the pool children counted, served by the main process.

A real ``python -m workers`` (prefork, multiprocess mode) runs probes submitted through a
real API server; its endpoint, scraped over loopback, must count exactly the probes the
test submitted, as the database ended them, and keep those counts when the pool child
that ran them is killed with -9 and replaced. The paths a probe cannot reach (a transient
error's retry, retries exhausted, a dead-lettered message) are counted in-process by
``execute`` itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from core.db import TaskRow
from tests._support import wait_for
from tests.workers._stack import Stack, private_vhost, stack, submit, wait_state
from tests.workers.test_execute import PROBE, Harness, with_run
from workers._context import TaskContext, TransientError
from workers._execute import execute
from workers._registry import RetryPolicy

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

ENDED: set[int] = {pb.TASK_STATE_SUCCEEDED, pb.TASK_STATE_FAILED}


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A private vhost for this module."""
    with private_vhost() as url:
        yield url


def scrape(port: int) -> Samples:
    """Every sample of the endpoint: (name, labels) -> value."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def metrics_port(s: Stack) -> int:
    (ready,) = (s.workdir / "workers").glob("worker-*.ready.json")
    port = json.loads(ready.read_text())["metrics_port"]
    assert isinstance(port, int), ready.read_text()
    assert port > 0, ready.read_text()
    return port


def pool_children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def ended_in_database(s: Stack) -> dict[int, int]:
    """The independent reference: state -> number of probe tasks in it."""
    with s.db().connect() as conn:
        rows = conn.execute(
            select(TaskRow.state, func.count())
            .where(TaskRow.kind == pb.TASK_KIND_PROBE)
            .group_by(TaskRow.state)
        ).all()
    return {int(state): int(count) for state, count in rows}


def counts(samples: Samples) -> dict[str, float]:
    names = ("started", "succeeded", "failed", "retried", "revoked")
    found = {n: value(samples, f"celery_task_{n}_total", name="probe") for n in names}
    found["runtime"] = value(samples, "celery_task_runtime_seconds_count", name="probe")
    found["wait"] = value(samples, "agentic_task_queue_wait_seconds_count", kind="probe")
    return found


def wait_counts(port: int, want: dict[str, int]) -> None:
    """Until the endpoint shows ``want`` (the counters move just after the end is written,
    allow for that instant); then compare, so that a mismatch shows the difference."""
    with contextlib.suppress(AssertionError):
        wait_for(lambda: counts(scrape(port)) == want, timeout=10, message="counts")
    assert counts(scrape(port)) == want


def test_the_worker_serves_what_its_pool_children_counted(broker_url: str, tmp_path: Path) -> None:
    succeeding, failing = 4, 3
    with stack(tmp_path, broker_url, f"sqlite:///{tmp_path / 'tasks.db'}") as s:
        stub = s.start_server()
        # One child runs everything, so killing it would lose every count kept in it.
        worker = s.start_worker(concurrency=1, AGENTIC_WORKER_NAME="metrics@test")
        port = metrics_port(s)
        assert value(scrape(port), "celery_worker_up", hostname="metrics@test") == 1.0

        tasks = [submit(stub, steps=2, step_millis=5) for _ in range(succeeding)]
        tasks += [submit(stub, steps=2, step_millis=5, fail_at_step=1) for _ in range(failing)]
        for task in tasks:
            wait_state(stub, task.id, ENDED)
        database = ended_in_database(s)
        assert database == {pb.TASK_STATE_SUCCEEDED: succeeding, pb.TASK_STATE_FAILED: failing}
        ran = succeeding + failing
        expected = {
            "started": ran,
            "succeeded": database[pb.TASK_STATE_SUCCEEDED],
            "failed": database[pb.TASK_STATE_FAILED],
            "retried": 0,
            "revoked": 0,
            "runtime": ran,
            "wait": ran,
        }
        wait_counts(port, expected)

        (child,) = pool_children(worker.process.pid)
        os.kill(child, signal.SIGKILL)

        def replaced() -> bool:
            now = pool_children(worker.process.pid)
            return len(now) == 1 and child not in now

        wait_for(replaced, timeout=15, message="the pool to replace the killed child")
        assert counts(scrape(port)) == expected, "counts went backwards with the child"
        more = submit(stub, steps=1, step_millis=0)
        wait_state(stub, more.id, ENDED)
        after = {**expected, "started": ran + 1, "succeeded": succeeding + 1}
        after |= {"runtime": ran + 1, "wait": ran + 1}
        wait_counts(port, after)
        assert value(scrape(port), "celery_worker_up", hostname="metrics@test") == 1.0


def _local(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_retries_exhaustion_dead_letters_and_queue_wait_are_counted(tmp_path: Path) -> None:
    """In-process: the default registry holds ``workers._metrics`` (no multiprocess mode)."""
    h = Harness(tmp_path)
    try:

        def flaky(spec: pb.ProbeSpec, context: TaskContext) -> pb.ProbeResult:
            raise TransientError("dependency blinked")

        policy = RetryPolicy(max_retries=1, backoff_first_seconds=0.1, backoff_max_seconds=0.1)
        registration = with_run(flaky, retry=policy)
        names = ("started", "retried", "failed")
        before = {n: _local(f"celery_task_{n}_total", name="probe") for n in names}
        waits = _local("agentic_task_queue_wait_seconds_count", kind="probe")
        slow_waits = _local("agentic_task_queue_wait_seconds_bucket", kind="probe", le="30.0")
        dead = _local("agentic_task_dead_lettered_total", kind="probe")

        task_id = h.submit()
        h.run(registration, task_id, 1)  # transient: retry scheduled
        # The retry's message was due 60 s ago: a wait over 30 s, not the task's age.
        due = datetime.now(UTC) - timedelta(seconds=60)
        execute(h.runtime, registration, task_id, 2, due=due)  # retries exhausted: failed
        assert h.tasks.get(task_id).state == pb.TASK_STATE_FAILED
        after = {n: _local(f"celery_task_{n}_total", name="probe") - before[n] for n in names}
        assert after == {"started": 2, "retried": 1, "failed": 1}
        assert _local("agentic_task_queue_wait_seconds_count", kind="probe") - waits == 2
        assert (
            _local("agentic_task_queue_wait_seconds_bucket", kind="probe", le="30.0") - slow_waits
            == 1
        ), "the retry's wait is measured from its due time"

        poison = h.submit()
        for worker in ("a", "b"):  # max_deliveries=2: both lose their worker
            h.attempts.claim(poison, 1, worker=worker, lease_seconds=0, max_deliveries=2)
        h.run(PROBE, poison)
        assert h.tasks.get(poison).state == pb.TASK_STATE_FAILED
        assert _local("agentic_task_dead_lettered_total", kind="probe") - dead == 1
    finally:
        h.engine.dispose()
