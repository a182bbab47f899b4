"""What the task section measures (TaskPlan) and the state its phases share (Run).

The phases (``bench._tasks_submit``, ``bench._tasks_events``) each add their
figures, targets and sanity lines to one ``Run``; ``bench._tasks`` starts the
processes and turns the Run into the report's section.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc
from agentic.tasks.v1 import tasks_pb2 as pb

from bench._tasks_cpu import TreeMeter, listener_pid
from bench._tasks_load import closed_loop
from bench._tasks_report import CPU_ROLES, TaskCheck, TaskFigure
from devtools.measure import Errors, summarize
from tests._identity import SERVICE_ACCOUNT_LIMITS
from tests._processes import Service
from tests._support import libpq_url
from tests.workers._stack import Stack

__all__ = [
    "CALL_TIMEOUT_SECONDS",
    "DRAIN_OVER_PEER_MIN",
    "DRAIN_OVER_RAW_MIN",
    "ENV",
    "EVENT_P50_MAX_MS",
    "EVENT_P99_MAX_MS",
    "PACED_FRACTION",
    "PACED_P99_MAX_MS",
    "SUBMIT_OVER_NAIVE_MIN",
    "Run",
    "TaskPlan",
    "cancel_all",
    "end_times",
    "ms",
    "per_op_ms",
    "percentiles",
    "submit_probes",
    "submit_request",
    "wait_running",
]


# Targets of issues 4 and 17 (see docs/benchmarks.md).
PACED_P99_MAX_MS = 40.0
PACED_FRACTION = 0.8
DRAIN_OVER_RAW_MIN = 0.3
DRAIN_OVER_PEER_MIN = 3.0
SUBMIT_OVER_NAIVE_MIN = 1.0
EVENT_P50_MAX_MS = 5.0
EVENT_P99_MAX_MS = 50.0

CALL_TIMEOUT_SECONDS = 5.0
_OWNER = "bench-tasks"
# Production timings (README, server and worker tables): the figures are those of a
# deployment, not of the tests' shortened ones.
ENV = {
    "AGENTIC_WATCH_HEARTBEAT_SECONDS": "5",
    "AGENTIC_OUTBOX_RELAY_INTERVAL_SECONDS": "0.5",
    "AGENTIC_CLAIM_LEASE_SECONDS": "30",
    "AGENTIC_CANCEL_GRACE_SECONDS": "10",
    "AGENTIC_TASK_REAP_AFTER_SECONDS": "60",
    "AGENTIC_LOG_LEVEL": "INFO",
    # One principal drives the whole load here, like a service account would.
    **SERVICE_ACCOUNT_LIMITS,
}
_RABBITMQ_PORT = 5672

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TaskPlan:
    """How much the task section does; every phase is also bounded in time."""

    latency_calls: int = 400
    """Sequential calls per pass, raw publisher and SubmitProbe alike."""
    latency_warmup: int = 50
    in_flight: int = 16
    """SubmitProbe calls in flight for the saturation throughput."""
    saturation_calls: int = 800
    """Per pass."""
    passes: int = 2
    paced_seconds: float = 8.0
    drain_tasks: int = 300
    raw_drain_tasks: int = 1000
    event_tasks: int = 10
    """Running probes the watchers follow (one worker, one prefork child each)."""
    event_step_millis: int = 4000
    """Each of them writes a progress event this often."""
    baseline_seconds: float = 8.0
    watchers: int = 1000
    window_seconds: float = 10.0
    storm_watchers: int = 5000
    storm_step_millis: int = 5000
    """Progress interval of the storm's probes; below the cancel grace (10 s), so the
    cancelled probes stop at their next step."""
    storm_attempt_seconds: float = 20.0
    """How long the full storm_watchers may take to connect before the storm is scaled
    down to what this machine holds (the report says so)."""
    storm_resume_seconds: float = 90.0
    channels: int = 8
    status_tasks: int = 40
    """Peer tasks whose status a client polls (issue 17, row 4)."""
    status_concurrency: int = 8
    """Worker children running them."""
    phase_time_limit_seconds: float = 120.0

    def describe(self) -> str:
        """One line for the report."""
        per_task = self.watchers // self.event_tasks
        return (
            f"submit: {self.latency_calls} sequential calls per pass (raw and SubmitProbe) "
            f"after {self.latency_warmup} warm-up calls, {self.saturation_calls} SubmitProbe "
            f"calls with {self.in_flight} in flight, {self.passes} interleaved passes, then "
            f"{self.paced_seconds:.0f} s open loop at {PACED_FRACTION:.0%} of that rate; "
            f"drain: {self.drain_tasks} no-op probes, {self.raw_drain_tasks} raw no-op "
            f"tasks; events: {self.event_tasks} running probes writing a progress event "
            f"every {self.event_step_millis} ms, {self.baseline_seconds:.0f} s with one "
            f"watcher per task, {self.window_seconds:.0f} s with {self.watchers} watchers "
            f"({per_task} per task) over {self.channels // 2} channels; storm: "
            f"{self.storm_watchers} watchers over {self.channels} channels on "
            f"{self.event_tasks} probes (progress every {self.storm_step_millis} ms); peer: "
            f"{self.drain_tasks} no-op tasks drained, {self.status_tasks} tasks polled"
        )


@dataclass
class _Meters:
    """Process trees of the section, for CPU per operation."""

    server_pid: int
    broker_pid: int | None
    postgres_pid: int | None

    def meter(self, worker_pid: int | None = None) -> TreeMeter:
        """A meter of every CPU_ROLES tree (the worker's when ``worker_pid`` is given)."""
        client, server, worker, broker, postgres = CPU_ROLES
        return TreeMeter(
            {
                client: os.getpid(),
                server: self.server_pid,
                worker: worker_pid,
                broker: self.broker_pid,
                postgres: self.postgres_pid,
            },
            alone=frozenset({client}),
        )


def per_op_ms(seconds: dict[str, float], count: int) -> dict[str, float]:
    """CPU seconds by role over ``count`` operations, as ms per operation."""
    return {role: s * 1000.0 / count for role, s in seconds.items()} if count else {}


def ms(samples_ns: list[int]) -> tuple[float | None, float | None]:
    """(p50, p99) in ms of nanosecond samples (nearest rank); None when there are none."""
    if not samples_ns:
        return None, None
    latency = summarize(samples_ns)
    return latency.p50_us / 1000.0, latency.p99_us / 1000.0


def percentiles(values_ms: list[float]) -> tuple[float | None, float | None]:
    """(p50, p99) of millisecond values, as ``ms`` computes them."""
    return ms([round(v * 1e6) for v in values_ms])


def submit_request() -> pb.SubmitProbeRequest:
    """A no-op probe (1 step of 0 ms) with a fresh request_id."""
    return pb.SubmitProbeRequest(
        request_id=str(uuid.uuid4()),
        owner_id=_OWNER,
        probe=pb.ProbeSpec(steps=1, step_millis=0),
    )


async def wait_running(stub: Any, ids: list[str], timeout_seconds: float) -> int:
    """Poll GetTask until every task runs (bounded); how many do."""
    deadline = time.monotonic() + timeout_seconds
    running = 0
    while time.monotonic() < deadline:
        states = [
            (await stub.GetTask(pb.GetTaskRequest(id=i), timeout=CALL_TIMEOUT_SECONDS)).task.state
            for i in ids
        ]
        running = sum(1 for s in states if s == pb.TASK_STATE_RUNNING)
        if running == len(ids):
            break
        await asyncio.sleep(0.2)
    return running


async def submit_probes(stub: Any, count: int, *, steps: int, step_millis: int) -> list[str]:
    """Submit ``count`` probes (16 at a time); their task ids. Raises if any failed."""
    ids: list[str] = []
    errors: Errors = Counter()

    async def one() -> None:
        request = pb.SubmitProbeRequest(
            request_id=str(uuid.uuid4()),
            owner_id=_OWNER,
            probe=pb.ProbeSpec(steps=steps, step_millis=step_millis),
        )
        reply = await stub.SubmitProbe(request, timeout=CALL_TIMEOUT_SECONDS)
        ids.append(reply.task.id)

    await closed_loop(one, errors, calls=count, in_flight=16, time_limit_seconds=60.0)
    if errors:
        raise RuntimeError(f"submitting {count} probes failed: {dict(errors)}")
    return ids


async def cancel_all(stub: Any, ids: list[str]) -> None:
    """CancelTask each task; one that already ended is fine."""
    for task_id in ids:
        try:
            await stub.CancelTask(pb.CancelTaskRequest(id=task_id), timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:  # already ended: fine
                raise


def _postgres_port(database_url: str) -> int:
    return urlsplit(libpq_url(database_url)).port or 5432


def end_times(database_url: str, ids: list[str]) -> tuple[int, float | None]:
    """(tasks SUCCEEDED, seconds from the first to the last end) straight from the database."""
    import psycopg

    with psycopg.connect(libpq_url(database_url), connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*), min(end_time), max(end_time) FROM tasks "
            "WHERE id = ANY(%s) AND state = %s",
            (ids, pb.TASK_STATE_SUCCEEDED),
        ).fetchone()
    if row is None or row[1] is None:
        return 0, None
    return int(row[0]), (row[2] - row[1]).total_seconds()


@dataclass
class Run:
    """One run of the section over a started stack: what the phases share and add to."""

    s: Stack
    plan: TaskPlan
    progress: Progress
    database_url: str
    broker_url: str
    figures: list[TaskFigure] = field(default_factory=list)
    checks: list[TaskCheck] = field(default_factory=list)
    sanity: list[str] = field(default_factory=list)
    scaled_down: str = ""

    def __post_init__(self) -> None:
        self.server: Service = self.s.servers[0]
        self.queue: str = self.s.env["AGENTIC_TASK_QUEUE"]
        self.raw_queue = f"{self.queue}.raw"
        self.meters = _Meters(
            server_pid=self.server.process.pid,
            broker_pid=listener_pid(_RABBITMQ_PORT),
            postgres_pid=listener_pid(_postgres_port(self.database_url)),
        )
