"""The jobs the beat knows: what each one submits when it fires.

Adding a job is one entry in ``JOBS`` (its name and the Submit call of its task kind) and
one in ``AGENTIC_SCHEDULE``. A job's submit gets the fire's ``request_id`` and must send
the same request for the same fire every time (the API compares the request with the one
first sent under that id).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agentic.tasks.v1 import tasks_pb2

from workers.beat._client import TaskClient

__all__ = ["JOBS", "Job"]


@dataclass(frozen=True, slots=True)
class Job:
    """A periodic job: a name in the schedule and the task it submits."""

    name: str
    submit: Callable[[TaskClient, str], tasks_pb2.Task]
    """(client, request_id) -> the task the API accepted (or already had)."""


def _health_probe(client: TaskClient, request_id: str) -> tasks_pb2.Task:
    # One short step: the probe's only purpose is to show the pipeline moves (an alert on
    # its absence, or on its failures, watches the whole submit-queue-run path).
    return client.call(
        client.stub.SubmitProbe,
        tasks_pb2.SubmitProbeRequest(
            request_id=request_id, probe=tasks_pb2.ProbeSpec(steps=1, step_millis=10)
        ),
    )


JOBS: Mapping[str, Job] = {job.name: job for job in (Job("health_probe", _health_probe),)}
"""Every job by name."""
