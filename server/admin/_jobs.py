"""RunJob's side of the periodic jobs: a job name -> the task to submit now.

The jobs are ``core.tasks.JOBS``, the very list the beat fires, so a job run by hand is the
task its schedule would have started. A manual run gets a fresh request_id: each call is
one more run, not a replay of the last scheduled fire (whose id the beat derives from the
job and the instant).
"""

from __future__ import annotations

import uuid

from google.protobuf.message import Message

from core.rpc import FieldViolation, InvalidArgument
from core.tasks import JOBS

__all__ = ["job_request"]

DOMAIN = "agentic.admin.v1"


def job_request(name: str) -> tuple[int, Message]:
    """(kind, Submit request) of job ``name``; INVALID_ARGUMENT naming the jobs otherwise."""
    job = JOBS.get(name)
    if job is None:
        names = ", ".join(sorted(JOBS))
        raise InvalidArgument(
            [
                FieldViolation(
                    "job", f"{name[:63]!r} is not a job; one of: {names}", reason="job.unknown"
                )
            ],
            reason="UNKNOWN_JOB",
            domain=DOMAIN,
        )
    return job.kind, job.request(str(uuid.uuid4()))
