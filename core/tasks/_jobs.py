"""The periodic jobs: each one a name and the Submit request of an ordinary task kind.

Shared by the beat (``workers.beat`` submits a job's request when its schedule fires) and
the API server (``AdminService.RunJob`` submits it at once), so a job means the same task
whichever starts it. A job's request depends only on the ``request_id`` it is given: the
API compares a replayed request with the one first sent under that id, so a fire retried
or doubled must build the very same request.

Adding a job is one entry in ``JOBS`` (and one in ``AGENTIC_SCHEDULE`` to schedule it).
The settings a job's task applies (the retention age, the backup destination, the warm
policies) are the worker's and the sidecar's, not the request's: a job never has to be
changed when they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agentic.tasks.v1 import maintenance_pb2, tasks_pb2
from google.protobuf.message import Message

from core.tasks._wire import kind_fields, submit_method_name

__all__ = ["JOBS", "Job"]


@dataclass(frozen=True, slots=True)
class Job:
    """A periodic job: a name in the schedule and the task it submits."""

    name: str
    """The name the schedule, RunJob and the audit log (``job:<name>``) use."""
    kind: int
    """The TaskKind it submits."""
    request: Callable[[str], Message]
    """request_id -> the kind's Submit request (``Submit<Kind>Request``)."""
    summary: str
    """One line for operators: what a run does."""

    @property
    def submit_method(self) -> str:
        """The TaskService RPC that takes ``request``: ``Submit`` + the kind in CamelCase."""
        return submit_method_name(kind_fields(self.kind).name)


def _health_probe(request_id: str) -> Message:
    # One short step: the probe's only purpose is to show the pipeline moves (an alert on
    # its absence, or on its failures, watches the whole submit-queue-run path).
    return tasks_pb2.SubmitProbeRequest(
        request_id=request_id, probe=tasks_pb2.ProbeSpec(steps=1, step_millis=10)
    )


def _retention(request_id: str) -> Message:
    return tasks_pb2.SubmitRetentionRequest(
        request_id=request_id, retention=maintenance_pb2.RetentionSpec()
    )


def _cache_warm(request_id: str) -> Message:
    return tasks_pb2.SubmitCacheWarmRequest(
        request_id=request_id, cache_warm=maintenance_pb2.CacheWarmSpec()
    )


def _backup(request_id: str) -> Message:
    # A scheduled backup applies the retention policy once it verified; a manual one
    # (python -m server.backup create) leaves pruning to the operator.
    return tasks_pb2.SubmitBackupRequest(
        request_id=request_id, backup=maintenance_pb2.BackupSpec(prune=True)
    )


JOBS: Mapping[str, Job] = {
    job.name: job
    for job in (
        Job(
            "health_probe",
            tasks_pb2.TASK_KIND_PROBE,
            _health_probe,
            "a one-step probe task: shows the submit-queue-run path moves",
        ),
        Job(
            "retention",
            tasks_pb2.TASK_KIND_RETENTION,
            _retention,
            "deletes old terminal tasks, expired uploads and artifacts of deleted projects",
        ),
        Job(
            "cache_warm",
            tasks_pb2.TASK_KIND_CACHE_WARM,
            _cache_warm,
            "loads every namespace with a warm policy into the cache",
        ),
        Job(
            "backup",
            tasks_pb2.TASK_KIND_BACKUP,
            _backup,
            "a verified backup of the database and the objects, then pruning",
        ),
    )
}
"""Every job by name."""
