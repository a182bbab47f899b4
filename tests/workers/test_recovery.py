"""A PENDING task whose confirmed message was lost (here: the queue is purged) still runs.

The broker confirmed the publish, so the outbox forgot it; then the message vanished
before any worker claimed it. Only the database still says PENDING. The server's
recovery re-queues such tasks after ``AGENTIC_TASK_PENDING_RECOVER_SECONDS``; the claim
in the database lets exactly one copy run even when a message was merely slow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from kombu.connection import Connection
from sqlalchemy import func, select

from core.db import TaskOutboxRow
from tests._support import wait_for
from tests.workers._stack import event_counts, private_vhost, stack, submit, watch_to_end


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A private vhost for this module."""
    with private_vhost() as url:
        yield url


def _queue_depth(broker_url: str, queue: str) -> int:
    with Connection(broker_url) as connection:
        channel = connection.channel()
        try:
            _name, depth, _consumers = channel.queue_declare(queue, passive=True)
            return int(depth)
        finally:
            channel.close()


def _purge(broker_url: str, queue: str) -> None:
    with Connection(broker_url) as connection:
        channel = connection.channel()
        try:
            channel.queue_purge(queue)
        finally:
            channel.close()


def test_pending_tasks_whose_messages_were_lost_are_run_once(
    broker_url: str, tmp_path: Path
) -> None:
    with stack(tmp_path, broker_url, f"sqlite:///{tmp_path / 'tasks.db'}") as s:
        stub = s.start_server(AGENTIC_TASK_PENDING_RECOVER_SECONDS="2")
        queue = s.env["AGENTIC_TASK_QUEUE"]
        tasks = [submit(stub, steps=1, step_millis=1) for _ in range(3)]

        def outbox_empty() -> bool:
            with s.db().connect() as conn:
                return conn.execute(select(func.count()).select_from(TaskOutboxRow)).scalar() == 0

        wait_for(outbox_empty, timeout=15, message="every publish to be confirmed")
        wait_for(
            lambda: _queue_depth(broker_url, queue) == len(tasks),
            timeout=15,
            message="the messages to sit in the queue",
        )
        _purge(broker_url, queue)  # the broker loses them; the database still says PENDING
        assert _queue_depth(broker_url, queue) == 0
        s.start_worker(concurrency=1)
        for task in tasks:
            events = watch_to_end(stub, task.id, timeout=60)
            assert events[-1].state == pb.TASK_STATE_SUCCEEDED, events[-1]
        counts = event_counts(s.db())
        for task in tasks:
            total, last = counts[task.id]
            assert total == last, "events must be contiguous"
        # Exactly one run each: pending, running, one progress step, succeeded.
        assert {counts[t.id][0] for t in tasks} == {4}, counts
