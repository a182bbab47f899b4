"""How the beat submits a job: the job's request (``core.tasks.JOBS``) to its Submit RPC.

The jobs themselves are declared once in the core, where AdminService.RunJob reads them
too; the beat only knows how to send one through its TaskService client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from agentic.tasks.v1 import tasks_pb2

from core.tasks import JOBS, Job
from workers.beat._client import TaskClient

__all__ = ["JOBS", "Job", "submit_job"]


def submit_job(client: TaskClient, job: Job, request_id: str) -> tasks_pb2.Task:
    """Submit ``job``'s request under ``request_id`` -> the task the API accepted (or had)."""
    method = cast(Callable[..., Any], getattr(client.stub, job.submit_method))
    return client.call(method, job.request(request_id))
