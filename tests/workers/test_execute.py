"""``execute`` and the claim rules in-process, without a broker: fast and deterministic.

The Celery task in workers.app is a thin shell around ``execute``; here a registry entry
with test functions stands in for the probe to reach the paths the probe cannot (transient
errors, crashes, hangs), and a fake ``kill_self`` records what the watchdog would kill.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from google.rpc import code_pb2, error_details_pb2, status_pb2

from core.db import make_engine, migrate
from core.tasks import AttemptStore, ClaimOutcome, OutboxItem
from server.tasks import TaskStore
from tests.workers._stack import submit_to_store
from workers._config import ConfigError, WorkerConfig
from workers._context import TaskContext, TransientError, WorkSettings
from workers._execute import Outcome, Runtime, Verdict, execute
from workers._registry import (
    REGISTRY,
    Limits,
    Registration,
    RetryPolicy,
    check_registry,
    with_limits,
)
from workers.probe import run_probe


class Harness:
    """A migrated SQLite database, the two stores, and a Runtime with recording fakes."""

    def __init__(self, path: Path) -> None:
        self.engine = make_engine(f"sqlite:///{path / 'execute.db'}", pool_size=4)
        migrate(self.engine)
        self.tasks = TaskStore(self.engine)
        self.attempts = AttemptStore(self.engine)
        self.notified: list[tuple[str, int]] = []
        self.published: list[OutboxItem] = []
        self.killed = threading.Event()
        self.runtime = Runtime(
            store=self.attempts,
            lease_seconds=3.0,
            cancel_grace_seconds=0.5,
            max_deliveries=2,
            notify=lambda task_id, seq: self.notified.append((task_id, seq)),
            publish=self._publish,
            kill_self=self.killed.set,
        )

    def _publish(self, item: OutboxItem) -> bool:
        self.published.append(item)
        return True

    def submit(self, steps: int = 2, fail_at_step: int = 0) -> str:
        spec = pb.ProbeSpec(steps=steps, step_millis=0, fail_at_step=fail_at_step)
        return submit_to_store(self.tasks, spec)

    def run(self, registration: Registration[Any, Any], task_id: str, attempt: int = 1) -> Outcome:
        return execute(self.runtime, registration, task_id, attempt)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.engine.dispose()


PROBE = REGISTRY[pb.TASK_KIND_PROBE]


def with_run(
    run: Callable[[pb.ProbeSpec, TaskContext], pb.ProbeResult], **kw: Any
) -> Registration[Any, Any]:
    return replace(PROBE, run=run, **kw)


def error_of(h: Harness, task_id: str) -> tuple[int, str]:
    task = h.tasks.get(task_id)
    assert task.error is not None
    status = status_pb2.Status.FromString(task.error)
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return status.code, info.reason


def test_probe_runs_to_success_and_a_second_delivery_is_only_acknowledged(h: Harness) -> None:
    task_id = h.submit(steps=3)
    assert h.run(PROBE, task_id) == Outcome(Verdict.ACK)
    record = h.tasks.get(task_id)
    assert record.state == pb.TASK_STATE_SUCCEEDED
    assert pb.ProbeResult.FromString(record.result or b"").steps_completed == 3
    assert record.last_sequence == 6  # PENDING, claim, 3 progress, SUCCEEDED
    assert h.run(PROBE, task_id) == Outcome(Verdict.ACK)  # redelivered: nothing runs
    assert h.tasks.get(task_id).last_sequence == 6
    assert [seq for _, seq in h.notified] == [2, 3, 4, 5, 6, 6]


def test_stale_attempt_is_acknowledged_without_running(h: Harness) -> None:
    task_id = h.submit()
    assert h.run(PROBE, task_id, attempt=7) == Outcome(Verdict.ACK)
    assert h.tasks.get(task_id).state == pb.TASK_STATE_PENDING


def test_live_claim_sends_the_copy_back_later(h: Harness) -> None:
    task_id = h.submit()
    claim = h.attempts.claim(task_id, 1, worker="other", lease_seconds=3, max_deliveries=5)
    assert claim.outcome is ClaimOutcome.RUN
    outcome = h.run(PROBE, task_id)
    assert outcome.verdict is Verdict.LATER
    assert 2.5 < outcome.countdown_seconds < 3.5


def test_expired_claim_is_taken_over_then_poison_is_dead_lettered(h: Harness) -> None:
    task_id = h.submit()
    for worker in ("a", "b"):  # two claims whose workers "died" (lease of 0 s)
        claim = h.attempts.claim(task_id, 1, worker=worker, lease_seconds=0, max_deliveries=2)
        assert claim.outcome is ClaimOutcome.RUN
    assert h.run(PROBE, task_id) == Outcome(Verdict.DEAD_LETTER)
    assert h.tasks.get(task_id).state == pb.TASK_STATE_FAILED
    assert error_of(h, task_id) == (code_pb2.ABORTED, "WORKER_LOST")


def test_takeover_of_a_cancelling_task_ends_it_cancelled(h: Harness) -> None:
    task_id = h.submit()
    h.attempts.claim(task_id, 1, worker="dead", lease_seconds=0, max_deliveries=5)
    assert h.tasks.cancel(task_id).record.state == pb.TASK_STATE_CANCELLING
    assert h.run(PROBE, task_id) == Outcome(Verdict.ACK)
    assert h.tasks.get(task_id).state == pb.TASK_STATE_CANCELLED


def test_transient_errors_retry_with_backoff_then_exhaust(h: Harness) -> None:
    calls: list[int] = []

    def flaky(spec: pb.ProbeSpec, context: TaskContext) -> pb.ProbeResult:
        calls.append(context.attempt)
        raise TransientError("dependency blinked")

    policy = RetryPolicy(max_retries=2, backoff_first_seconds=4.0, backoff_max_seconds=6.0)
    registration = with_run(flaky, retry=policy)
    task_id = h.submit()
    for attempt in (1, 2):
        assert h.run(registration, task_id, attempt) == Outcome(Verdict.ACK)
        record = h.tasks.get(task_id)
        assert (record.state, record.attempt) == (pb.TASK_STATE_RETRY_SCHEDULED, attempt + 1)
        item = h.published[-1]
        assert (item.task_id, item.attempt) == (task_id, attempt + 1)
        delay = (item.not_before - record.update_time).total_seconds()
        ceiling = min(6.0, 4.0 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling  # exponential, capped, jittered
        assert error_of(h, task_id) == (code_pb2.UNAVAILABLE, "TASK_TRANSIENT_ERROR")
    assert h.run(registration, task_id, 3) == Outcome(Verdict.ACK)
    assert h.tasks.get(task_id).state == pb.TASK_STATE_FAILED
    assert error_of(h, task_id) == (code_pb2.UNAVAILABLE, "TASK_RETRIES_EXHAUSTED")
    assert calls == [1, 2, 3]


def test_permanent_error_fails_at_once_and_a_crash_is_internal(h: Harness) -> None:
    task_id = h.submit(steps=3, fail_at_step=2)
    h.run(PROBE, task_id)
    assert h.tasks.get(task_id).state == pb.TASK_STATE_FAILED
    assert error_of(h, task_id) == (code_pb2.FAILED_PRECONDITION, "PROBE_FAILED")
    assert h.published == []

    def broken(spec: pb.ProbeSpec, context: TaskContext) -> pb.ProbeResult:
        raise KeyError("internal detail")

    crashed = h.submit()
    h.run(with_run(broken), crashed)
    assert error_of(h, crashed) == (code_pb2.INTERNAL, "TASK_CRASHED")
    assert (
        "internal detail"
        not in status_pb2.Status.FromString(h.tasks.get(crashed).error or b"").message
    )


def test_watchdog_stops_a_task_that_ignores_cancellation(h: Harness) -> None:
    task_id = h.submit()
    released = threading.Event()

    def stubborn(spec: pb.ProbeSpec, context: TaskContext) -> pb.ProbeResult:
        h.tasks.cancel(task_id)
        # Stands in for code that never checks: only the watchdog's kill ends it.
        assert h.killed.wait(10), "the watchdog did not stop the task"
        released.set()
        return pb.ProbeResult(steps_completed=1)

    assert h.run(with_run(stubborn), task_id) == Outcome(Verdict.ACK)
    assert released.is_set()
    record = h.tasks.get(task_id)
    assert record.state == pb.TASK_STATE_CANCELLED  # the late result was not written
    assert record.result is None


def test_watchdog_enforces_the_hard_limit(h: Harness) -> None:
    task_id = h.submit()

    def hangs(spec: pb.ProbeSpec, context: TaskContext) -> pb.ProbeResult:
        assert h.killed.wait(10), "the watchdog did not stop the task"
        return pb.ProbeResult(steps_completed=1)

    registration = with_run(hangs, limits=Limits(soft_seconds=0.5, hard_seconds=0.5))
    h.run(registration, task_id)
    assert h.tasks.get(task_id).state == pb.TASK_STATE_FAILED
    assert error_of(h, task_id) == (code_pb2.DEADLINE_EXCEEDED, "TASK_TIMED_OUT")


def test_registry_is_complete_and_bounded_by_the_consumer_timeout() -> None:
    check_registry(REGISTRY, consumer_timeout_seconds=1800)
    with pytest.raises(ValueError, match="consumer_timeout"):
        check_registry(REGISTRY, consumer_timeout_seconds=600)
    with pytest.raises(ValueError, match="has no registration"):
        check_registry({}, consumer_timeout_seconds=1800)
    wrong = replace(PROBE, result_type=pb.ProbeSpec)
    with pytest.raises(ValueError, match="result_type"):
        check_registry({pb.TASK_KIND_PROBE: wrong}, consumer_timeout_seconds=1800)
    assert PROBE.run is run_probe


def test_operator_limits_replace_a_kinds_and_bound_its_duckdb_memory(h: Harness) -> None:
    config = WorkerConfig.from_env(
        {"AGENTIC_TASK_LIMITS": "probe=30/40/256, verify_artifact=100/120"}
    )
    overrides = {
        name: Limits(soft_seconds=soft, hard_seconds=hard, memory_mib=memory)
        for name, soft, hard, memory in config.task_limits
    }
    registry = with_limits(REGISTRY, overrides)
    assert registry[pb.TASK_KIND_PROBE].limits == Limits(30.0, 40.0, 256)
    assert registry[pb.TASK_KIND_VERIFY_ARTIFACT].limits == Limits(100.0, 120.0, 0)
    assert registry[pb.TASK_KIND_ANALYTICS] is REGISTRY[pb.TASK_KIND_ANALYTICS]

    seen: list[int] = []

    def records_memory(spec: pb.ProbeSpec, context: TaskContext) -> pb.ProbeResult:
        seen.append(context.work.duckdb_memory_limit_mib)
        return pb.ProbeResult(steps_completed=spec.steps)

    bounded = replace(registry[pb.TASK_KIND_PROBE], run=records_memory)
    h.run(bounded, h.submit())
    h.run(replace(PROBE, run=records_memory), h.submit())
    assert seen == [256, WorkSettings().duckdb_memory_limit_mib]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("probe=30", "not kind=soft/hard"),
        ("probe=a/b", "not a number"),
        ("probe=40/30", "soft <= hard"),
        ("probe=30/40/10", "memory_mib >= 64"),
    ],
)
def test_bad_operator_limits_name_the_variable(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"AGENTIC_TASK_LIMITS.*{message}"):
        WorkerConfig.from_env({"AGENTIC_TASK_LIMITS": raw})


def test_operator_limits_for_an_unknown_kind_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown kinds profile"):
        with_limits(REGISTRY, {"profile": Limits(1.0, 2.0)})
