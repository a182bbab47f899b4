"""The task pipeline for tests: a private RabbitMQ vhost, API servers and worker processes.

Every test run gets its own vhost on the shared RabbitMQ (deleted afterwards) and every
stack its own queue and exchange names, so nothing is shared with other runs or with the
default vhost. Workers are real ``python -m workers`` processes in their own process
group, so a test can kill -9 a whole worker (parent and pool children) like a crash.
"""

from __future__ import annotations

import itertools
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from sqlalchemy import Engine, func, select

from core.db import TaskEventRow, TaskOutboxRow, TaskRow, make_engine
from server.tasks import TaskStore, request_hash
from tests._identity import SERVICE_ACCOUNT_LIMITS, authorized_channel
from tests._processes import Service, Worker, start_service, start_worker
from tests._support import wait_for

BROKER_HOST = "127.0.0.1:5672"
TIMEOUT = 10.0


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def private_vhost() -> Iterator[str]:
    """A new vhost with full rights for guest; yields its AMQP URL, deletes it afterwards."""
    name = f"agentic-test-{uuid.uuid4().hex[:12]}"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{BROKER_HOST}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)


def queue_figures(vhost_url: str, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of ``queue`` as ``rabbitmqctl list_queues`` prints them."""
    vhost = vhost_url.rsplit("/", 1)[1]
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages_ready", "consumers"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == queue:
            return int(fields[1]), int(fields[2])
    raise AssertionError(f"rabbitmqctl does not list {queue}:\n{out}")


def outbox_task_ids(engine: Engine) -> set[str]:
    """Tasks with a publish the broker has not confirmed yet."""
    with engine.connect() as conn:
        return set(conn.scalars(select(TaskOutboxRow.task_id)).all())


@dataclass
class Stack:
    """One database, one queue, API servers and workers on a private vhost."""

    workdir: Path
    database_url: str
    env: dict[str, str]
    servers: list[Service] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    channels: list[grpc.Channel] = field(default_factory=list)
    engine: Engine | None = None

    def start_server(self, **extra: str) -> tasks_pb2_grpc.TaskServiceStub:
        """Start an API server on this stack; a stub to it."""
        env = {
            **self.env,
            "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
            "AGENTIC_METRICS_ADDRESS": "",
            "AGENTIC_CACHE_ADDRESS": "",
            "AGENTIC_EVENTS_ENABLED": "false",
            "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
            **extra,
        }
        service = start_service("server", env, self.workdir / "server")
        self.servers.append(service)
        channel = authorized_channel(service.address)
        self.channels.append(channel)
        return tasks_pb2_grpc.TaskServiceStub(channel)

    def start_worker(
        self,
        *,
        concurrency: int = 2,
        timeout: float = 30.0,
        wait: bool = True,
        command: list[str] | None = None,
        **extra: str,
    ) -> Worker:
        """Start ``python -m workers`` (or ``command``); return once it consumes its queue."""
        worker = start_worker(
            {**self.env, **extra},
            self.workdir / "workers",
            concurrency=concurrency,
            timeout=timeout,
            wait=wait,
            command=command,
        )
        self.workers.append(worker)
        return worker

    def db(self) -> Engine:
        """Direct access to the stack's database."""
        if self.engine is None:
            self.engine = make_engine(self.database_url, pool_size=2)
        return self.engine

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for channel in self.channels:
            channel.close()
        codes = [service.stop() for service in self.servers]
        if self.engine is not None:
            self.engine.dispose()
        assert all(code == 0 for code in codes), f"servers exited with {codes}"


@contextmanager
def stack(workdir: Path, broker_url: str, database_url: str, **env: str) -> Iterator[Stack]:
    """A stack with its own queue and events exchange (names unique to it)."""
    tag = uuid.uuid4().hex[:8]
    base = {
        "AGENTIC_BROKER_URL": broker_url,
        "DATABASE_URL": database_url,
        "AGENTIC_TASK_QUEUE": f"test.tasks.{tag}",
        "AGENTIC_TASK_EVENTS_EXCHANGE": f"test.task-events.{tag}",
        "AGENTIC_WATCH_HEARTBEAT_SECONDS": "1",
        "AGENTIC_OUTBOX_RELAY_INTERVAL_SECONDS": "0.2",
        "AGENTIC_CLAIM_LEASE_SECONDS": "3",
        "AGENTIC_CANCEL_GRACE_SECONDS": "1",
        "AGENTIC_LOG_LEVEL": "INFO",
        # Servers and workers share one object store, as in production.
        "AGENTIC_OBJECT_STORE_URL": (workdir / tag / "objects").resolve().as_uri(),
        # These tests drive many tasks as one principal.
        **SERVICE_ACCOUNT_LIMITS,
        **env,
    }
    result = Stack(workdir=workdir / tag, database_url=database_url, env=base)
    try:
        yield result
    finally:
        result.close()


# --- client helpers ------------------------------------------------------------------


def submit(
    stub: tasks_pb2_grpc.TaskServiceStub,
    *,
    steps: int = 3,
    step_millis: int = 10,
    fail_at_step: int = 0,
    owner: str = "alice",
    priority: pb.Priority.ValueType = pb.PRIORITY_UNSPECIFIED,
    request_id: str | None = None,
) -> pb.Task:
    """Submit a probe; the accepted task."""
    request = pb.SubmitProbeRequest(
        request_id=request_id or str(uuid.uuid4()),
        owner_id=owner,
        priority=priority,
        probe=pb.ProbeSpec(steps=steps, step_millis=step_millis, fail_at_step=fail_at_step),
    )
    task: pb.Task = stub.SubmitProbe(request, timeout=TIMEOUT).task
    return task


def submit_to_store(store: TaskStore, spec: pb.ProbeSpec, *, owner: str = "t") -> str:
    """Submit a probe straight into the task store (no server): the new task's id."""
    request = pb.SubmitProbeRequest(request_id=str(uuid.uuid4()), owner_id=owner, probe=spec)
    return store.submit(
        kind=pb.TASK_KIND_PROBE,
        spec=spec.SerializeToString(),
        owner_id=owner,
        priority=0,
        request_id=request.request_id,
        request_hash=request_hash(pb.TASK_KIND_PROBE, request),
    ).record.id


def watch_to_end(
    stub: tasks_pb2_grpc.TaskServiceStub, task_id: str, *, after: int = 0, timeout: float = 30.0
) -> list[pb.TaskEvent]:
    """Every event after ``after`` until the stream ends (heartbeats dropped)."""
    events = []
    for item in stub.WatchTask(
        pb.WatchTaskRequest(id=task_id, after_sequence=after), timeout=timeout
    ):
        if item.HasField("event"):
            events.append(item.event)
    return events


def assert_progress_cadence(events: Sequence[pb.TaskEvent]) -> None:
    """Between two consecutive ``events``, never more than 2 s and 5% (issue 12's cadence
    of progress: at least every 2 s or every 5%)."""
    for before, after in itertools.pairwise(events):
        gap = (after.time.ToDatetime() - before.time.ToDatetime()).total_seconds()
        assert gap <= 2.0 or after.progress.fraction - before.progress.fraction <= 0.05, (
            before.progress,
            after.progress,
            gap,
        )


def get(stub: tasks_pb2_grpc.TaskServiceStub, task_id: str) -> pb.Task:
    """GetTask."""
    task: pb.Task = stub.GetTask(pb.GetTaskRequest(id=task_id), timeout=TIMEOUT).task
    return task


def wait_state(
    stub: tasks_pb2_grpc.TaskServiceStub, task_id: str, states: set[int], *, timeout: float = 20.0
) -> pb.Task:
    """Poll GetTask until the task is in one of ``states``."""
    seen: list[pb.Task] = []

    def reached() -> bool:
        seen.append(get(stub, task_id))
        return seen[-1].state in states

    wait_for(reached, timeout=timeout, message=f"task {task_id} to reach {states}: {seen[-1:]}")
    return seen[-1]


def event_counts(engine: Engine) -> dict[str, tuple[int, int]]:
    """task id -> (number of events, last_sequence) straight from the database."""
    with engine.connect() as conn:
        counts = dict(
            conn.execute(
                select(TaskEventRow.task_id, func.count()).group_by(TaskEventRow.task_id)
            ).all()
        )
        lasts = dict(conn.execute(select(TaskRow.id, TaskRow.last_sequence)).all())
    return {task_id: (int(counts.get(task_id, 0)), int(last)) for task_id, last in lasts.items()}


def decode_events(engine: Engine, task_id: str) -> list[pb.TaskEvent]:
    """A task's stored events in sequence order."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(TaskEventRow.data)
            .where(TaskEventRow.task_id == task_id)
            .order_by(TaskEventRow.sequence)
        ).all()
    return [pb.TaskEvent.FromString(bytes(row[0])) for row in rows]
