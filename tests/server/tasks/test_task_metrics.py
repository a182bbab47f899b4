"""Task-pipeline metrics on a real server: counters of what passed through, and gauges read
from the database at scrape time (the server of the ``api`` fixture has no broker, so
submitted tasks stay PENDING and their publishes stay in the outbox)."""

from __future__ import annotations

import re
import uuid

from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc

from tests._support import wait_for
from tests.conftest import Api
from tests.server.test_lifecycle import scrape

TIMEOUT = 10


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample, labelled or not; None when absent."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(2))
    return None


def test_submits_streams_and_database_gauges_are_exported(api: Api) -> None:
    stub = tasks_pb2_grpc.TaskServiceStub(api.channel)
    before = scrape(api)
    submitted_before = sample(before, "agentic_task_submits_total", kind="probe") or 0.0
    pending_before = sample(before, "agentic_tasks", state="pending", kind="probe") or 0.0
    for _ in range(3):
        stub.SubmitProbe(
            pb.SubmitProbeRequest(request_id=str(uuid.uuid4()), probe=pb.ProbeSpec(steps=1)),
            timeout=TIMEOUT,
        )
    stream = stub.WatchTask(
        pb.WatchTaskRequest(
            id=stub.ListTasks(pb.ListTasksRequest(page_size=1), timeout=TIMEOUT).tasks[0].id
        ),
        timeout=30,
    )
    assert next(stream).HasField("event")
    seen: list[str] = []

    def exported() -> bool:
        # Gauges are cached for up to 2 s; poll until this scrape reflects the submits.
        seen.append(scrape(api))
        pending = sample(seen[-1], "agentic_tasks", state="pending", kind="probe") or 0.0
        return pending >= pending_before + 3

    try:
        wait_for(exported, timeout=10, message="agentic_tasks to count the new PENDING tasks")
        text = seen[-1]
        assert sample(text, "agentic_task_submits_total", kind="probe") == submitted_before + 3
        assert (sample(text, "agentic_task_outbox_rows") or 0) >= 3, "no broker: all unconfirmed"
        assert (sample(text, "agentic_task_oldest_pending_seconds") or 0) > 0
        assert (sample(text, "agentic_watch_streams") or 0) >= 1
        assert (sample(text, "agentic_watched_tasks") or 0) >= 1
        assert (sample(text, "agentic_watch_feed_reads_total", path="shared") or 0) >= 1
    finally:
        stream.cancel()
