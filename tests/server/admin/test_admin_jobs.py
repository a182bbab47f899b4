"""RunJob and GetTaskStats' broker figures, over real gRPC with a real RabbitMQ vhost.

RunJob submits the task of a job of ``core.tasks.JOBS`` on the ordinary submit path: the
task is watched to its end by a real worker, and every call is one more run. The queue
figures GetTaskStats reports are compared with ``rabbitmqctl list_queues``, the broker's
own command line, as the independent reference.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from agentic.admin.v1 import admin_pb2 as pb
from agentic.admin.v1 import admin_pb2_grpc
from agentic.tasks.v1 import tasks_pb2 as tpb
from sqlalchemy import select

from core.db import AuditEventRow
from core.tasks import JOBS
from tests._identity import ADMIN, authorized_channel
from tests._status import rich_status
from tests._support import wait_for
from tests.workers._stack import (
    Stack,
    outbox_task_ids,
    private_vhost,
    queue_figures,
    stack,
    submit,
    watch_to_end,
)

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def vhost() -> Iterator[str]:
    with private_vhost() as url:
        yield url


@pytest.fixture
def pipeline(vhost: str, tmp_path: Path) -> Iterator[Stack]:
    with stack(tmp_path, vhost, f"sqlite:///{tmp_path / 'jobs.db'}") as s:
        yield s


def _admin(s: Stack) -> admin_pb2_grpc.AdminServiceStub:
    channel = authorized_channel(s.servers[-1].address)
    s.channels.append(channel)
    return admin_pb2_grpc.AdminServiceStub(channel)


def test_run_job_submits_the_jobs_task_which_runs_to_its_end_and_is_audited(
    pipeline: Stack,
) -> None:
    tasks = pipeline.start_server()
    admin = _admin(pipeline)
    pipeline.start_worker()
    first = admin.RunJob(pb.RunJobRequest(job="health_probe"), timeout=TIMEOUT).task
    second = admin.RunJob(pb.RunJobRequest(job="health_probe"), timeout=TIMEOUT).task
    assert first.kind == second.kind == JOBS["health_probe"].kind == tpb.TASK_KIND_PROBE
    assert first.id != second.id, "every RunJob call is one more run"
    assert first.owner_id == ADMIN
    for task in (first, second):
        events = watch_to_end(tasks, task.id)
        assert events[-1].state == tpb.TASK_STATE_SUCCEEDED, events[-1]
    with pipeline.db().connect() as connection:
        outcomes = [
            tuple(row)
            for row in connection.execute(
                select(AuditEventRow.action, AuditEventRow.outcome, AuditEventRow.subject)
            )
        ]
    assert outcomes.count(("/agentic.admin.v1.AdminService/RunJob", "OK", ADMIN)) == 2


def test_run_job_of_an_unknown_job_is_invalid_argument_naming_the_jobs(pipeline: Stack) -> None:
    pipeline.start_server()
    admin = _admin(pipeline)
    with pytest.raises(grpc.RpcError) as caught:
        admin.RunJob(pb.RunJobRequest(job="vacuum"), timeout=TIMEOUT)
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.reason == "UNKNOWN_JOB"
    assert set(status.violations) == {"job"}
    assert all(name in status.violations["job"] for name in JOBS), status.violations


def test_task_stats_report_the_brokers_queue_depth_and_consumers(
    pipeline: Stack, vhost: str
) -> None:
    tasks = pipeline.start_server()
    admin = _admin(pipeline)
    queue = pipeline.env["AGENTIC_TASK_QUEUE"]
    made = 7
    for _ in range(made):
        submit(tasks, steps=1, step_millis=1, request_id=str(uuid.uuid4()))
    wait_for(
        lambda: not outbox_task_ids(pipeline.db()),
        timeout=20,
        message="the broker to confirm all",
    )

    def depths() -> dict[str, pb.QueueDepth]:
        stats = admin.GetTaskStats(pb.GetTaskStatsRequest(), timeout=TIMEOUT)
        return {q.queue: q for q in stats.queues}

    reported = depths()
    assert set(reported) == {queue, f"{queue}.dlq"}
    work = reported[queue]
    assert work.reachable, work.error
    assert (work.messages, work.consumers) == queue_figures(vhost, queue) == (made, 0)
    dead = reported[f"{queue}.dlq"]
    assert (dead.messages, dead.consumers) == queue_figures(vhost, f"{queue}.dlq")

    # A worker attaches (and drains the queue): its consumers are counted.
    pipeline.start_worker(concurrency=1)
    wait_for(
        lambda: queue_figures(vhost, queue) == (0, 1),
        timeout=30,
        message=f"the worker to drain {queue}",
    )
    work = depths()[queue]
    assert (work.messages, work.consumers) == (0, 1)


def test_task_stats_say_when_the_broker_does_not_answer(pipeline: Stack) -> None:
    # A port held bound but not listening refuses connections: the database figures still
    # come, the queues say why theirs do not.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        pipeline.start_server(AGENTIC_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{port}//")
        admin = _admin(pipeline)
        stats = admin.GetTaskStats(pb.GetTaskStatsRequest(), timeout=TIMEOUT)
    assert stats.queues, "the configured queues are listed"
    for queue in stats.queues:
        assert not queue.reachable, queue
        assert queue.error, queue
        assert (queue.messages, queue.consumers) == (0, 0)
