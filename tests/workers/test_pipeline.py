"""The whole pipeline: API server, RabbitMQ (private vhost), two real worker processes.

Round trip, failure and RetryTask, cooperative and hard cancellation, cancellation of a
task that never started, priorities, and resuming a watch stream cut at random points.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from google.rpc import code_pb2, error_details_pb2

from tests.workers._stack import (
    TIMEOUT,
    Stack,
    decode_events,
    event_counts,
    get,
    private_vhost,
    stack,
    submit,
    wait_state,
    watch_to_end,
)

Stub = tasks_pb2_grpc.TaskServiceStub


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A private vhost for this module."""
    with private_vhost() as url:
        yield url


@pytest.fixture(scope="module")
def pipeline(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Stub]]:
    """One server and two workers (concurrency 2 each) on SQLite."""
    workdir = tmp_path_factory.mktemp("pipeline")
    with stack(workdir, broker_url, f"sqlite:///{workdir / 'tasks.db'}") as s:
        stub = s.start_server()
        s.start_worker()
        s.start_worker()
        yield s, stub


def test_round_trip_with_live_progress(pipeline: tuple[Stack, Stub]) -> None:
    s, stub = pipeline
    task = submit(stub, steps=5, step_millis=20)
    events = watch_to_end(stub, task.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    states = [e.state for e in events]
    assert states[0] == pb.TASK_STATE_PENDING
    assert states[1:-1] == [pb.TASK_STATE_RUNNING] * 6  # claimed, then 5 progress reports
    assert [round(e.progress.fraction, 2) for e in events[2:-1]] == [0.2, 0.4, 0.6, 0.8, 1.0]
    end = events[-1]
    assert end.terminal
    assert end.state == pb.TASK_STATE_SUCCEEDED
    assert end.task.probe_result.steps_completed == 5
    assert end.task.probe_result.elapsed.ToMilliseconds() >= 100
    final = get(stub, task.id)
    assert final == end.task
    assert final.HasField("start_time")
    assert final.HasField("end_time")
    assert event_counts(s.db())[task.id] == (len(events), len(events))


def test_failure_then_retry_as_a_new_attempt(pipeline: tuple[Stack, Stub]) -> None:
    _, stub = pipeline
    task = submit(stub, steps=4, step_millis=5, fail_at_step=3)
    events = watch_to_end(stub, task.id)
    failed = events[-1].task
    assert failed.state == pb.TASK_STATE_FAILED
    assert failed.error.code == code_pb2.FAILED_PRECONDITION
    assert "step 3" in failed.error.message
    info = error_details_pb2.ErrorInfo()
    assert failed.error.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("PROBE_FAILED", "agentic.tasks.v1")
    assert failed.progress.fraction == pytest.approx(0.5)  # steps 1 and 2 reported
    retried = stub.RetryTask(pb.RetryTaskRequest(id=task.id), timeout=TIMEOUT).task
    assert (retried.state, retried.attempt) == (pb.TASK_STATE_PENDING, 2)
    more = watch_to_end(stub, task.id, after=events[-1].sequence)
    assert more[0].sequence == events[-1].sequence + 1
    assert {e.attempt for e in more} == {2}
    assert more[-1].state == pb.TASK_STATE_FAILED  # the probe fails the same way again
    assert more[-1].task.attempt == 2


def test_cancel_running_stops_cooperatively(pipeline: tuple[Stack, Stub]) -> None:
    _, stub = pipeline
    task = submit(stub, steps=200, step_millis=50)
    wait_state(stub, task.id, {pb.TASK_STATE_RUNNING})
    cancelling = stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=TIMEOUT).task
    assert cancelling.state == pb.TASK_STATE_CANCELLING
    begin = time.monotonic()
    events = watch_to_end(stub, task.id, after=cancelling.last_sequence - 1)
    assert events[0].state == pb.TASK_STATE_CANCELLING
    assert events[-1].state == pb.TASK_STATE_CANCELLED
    assert events[-1].task.error.code == code_pb2.CANCELLED
    assert time.monotonic() - begin < 1.0  # a step boundary, well before the 1 s grace
    assert events[-1].task.progress.fraction < 1.0


def test_cancel_running_stops_hard_after_grace(pipeline: tuple[Stack, Stub]) -> None:
    s, stub = pipeline
    task = submit(stub, steps=1, step_millis=60_000)  # never reaches a step boundary
    wait_state(stub, task.id, {pb.TASK_STATE_RUNNING})
    # The probe checks for cancellation once, between its claim and its 60 s step; nothing
    # signals that it got past that check, so give it a moment (else it stops politely).
    time.sleep(1.0)
    stub.CancelTask(pb.CancelTaskRequest(id=task.id), timeout=TIMEOUT)
    begin = time.monotonic()
    events = watch_to_end(stub, task.id)
    assert events[-1].state == pb.TASK_STATE_CANCELLED
    assert 0.9 < time.monotonic() - begin < 5.0  # grace 1 s, checked every second
    # The killed pool child's message came back and was acknowledged, not run again.
    wait_state(stub, task.id, {pb.TASK_STATE_CANCELLED})
    assert [e.state for e in decode_events(s.db(), task.id)].count(pb.TASK_STATE_RUNNING) == 1


def test_stream_resume_at_random_cuts_has_no_gaps_or_repeats(
    pipeline: tuple[Stack, Stub],
) -> None:
    _, stub = pipeline
    rng = random.Random(4)
    task = submit(stub, steps=60, step_millis=15)
    received: list[int] = []
    last = 0
    ended = False
    for _ in range(200):
        call = stub.WatchTask(pb.WatchTaskRequest(id=task.id, after_sequence=last), timeout=TIMEOUT)
        cut_after = rng.randint(1, 8)
        try:
            for item in call:
                if not item.HasField("event"):
                    continue
                received.append(item.event.sequence)
                last = item.event.sequence
                if item.event.terminal:
                    ended = True
                    break
                cut_after -= 1
                if cut_after == 0:
                    break
        finally:
            call.cancel()
        if ended:
            break
    assert ended, f"no terminal event after {len(received)} events"
    assert received == list(range(1, len(received) + 1)), "gap or repeat"
    assert received[-1] == get(stub, task.id).last_sequence


def test_many_concurrent_watchers_see_the_same_log(pipeline: tuple[Stack, Stub]) -> None:
    _, stub = pipeline
    task = submit(stub, steps=10, step_millis=20)
    results: list[list[int]] = []
    lock = threading.Lock()

    def watcher() -> None:
        sequences = [e.sequence for e in watch_to_end(stub, task.id)]
        with lock:
            results.append(sequences)

    threads = [threading.Thread(target=watcher) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8
    assert all(r == results[0] for r in results)
    assert results[0] == list(range(1, 14))  # PENDING, claim, 10 progress, end


@pytest.fixture
def idle_queue(broker_url: str, tmp_path: Path) -> Iterator[tuple[Stack, Stub]]:
    """A server on its own queue with no worker yet (the test starts one)."""
    with stack(tmp_path, broker_url, f"sqlite:///{tmp_path / 'idle.db'}") as s:
        yield s, s.start_server()


def test_cancelled_before_start_never_runs(idle_queue: tuple[Stack, Stub]) -> None:
    s, stub = idle_queue
    doomed = submit(stub, steps=2, step_millis=5)
    cancelled = stub.CancelTask(pb.CancelTaskRequest(id=doomed.id), timeout=TIMEOUT).task
    assert cancelled.state == pb.TASK_STATE_CANCELLED
    witness = submit(stub, steps=2, step_millis=5)
    s.start_worker(concurrency=1)
    assert watch_to_end(stub, witness.id)[-1].state == pb.TASK_STATE_SUCCEEDED
    # The worker has consumed the queue past the cancelled task's message by now.
    assert [e.state for e in decode_events(s.db(), doomed.id)] == [
        pb.TASK_STATE_PENDING,
        pb.TASK_STATE_CANCELLED,
    ]


def test_high_priority_overtakes_waiting_low_priority(idle_queue: tuple[Stack, Stub]) -> None:
    s, stub = idle_queue
    low = [submit(stub, steps=1, step_millis=1, priority=pb.PRIORITY_LOW) for _ in range(4)]
    high = [submit(stub, steps=1, step_millis=1, priority=pb.PRIORITY_HIGH) for _ in range(4)]
    s.start_worker(concurrency=1)
    for task in low + high:
        wait_state(stub, task.id, {pb.TASK_STATE_SUCCEEDED})
    starts = {t.id: get(stub, t.id).start_time.ToNanoseconds() for t in low + high}
    assert max(starts[t.id] for t in high) < min(starts[t.id] for t in low)


def test_celery_cli_worker_serves_and_stops_cleanly(pipeline: tuple[Stack, Stub]) -> None:
    s, stub = pipeline
    celery = str(Path(sys.executable).with_name("celery"))
    cli = [celery, "-A", "workers.app", "worker", "--concurrency=1", "--without-mingle"]
    extra = s.start_worker(command=cli)
    for old in s.workers[:2]:
        old.stop()  # only the CLI worker is left to run the next task
    try:
        assert watch_to_end(stub, submit(stub).id)[-1].state == pb.TASK_STATE_SUCCEEDED
        assert extra.stop() == 0
    finally:
        s.start_worker()
        s.start_worker()


def test_watch_reports_unknown_as_not_found(pipeline: tuple[Stack, Stub]) -> None:
    _, stub = pipeline
    with pytest.raises(grpc.RpcError) as info:
        list(stub.WatchTask(pb.WatchTaskRequest(id="6f1c6f1c-0000-4000-8000-000000000000")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
