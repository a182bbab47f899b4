"""``python -m workers.beat``: the scheduler of periodic jobs, exactly one active at a time.

Every beat process competes for one leader lease in the database (``workers._leader``);
the one holding it fires the jobs of ``AGENTIC_SCHEDULE`` (``workers._schedule``), each fire
an ordinary task submitted through the API server's TaskService with a request_id derived
from the job and its scheduled instant (``workers.beat._beat`` states the policy). Jobs are
declared in ``core.tasks.JOBS`` (shared with AdminService.RunJob).
"""

from workers.beat._beat import Beat
from workers.beat._client import SubmitError, TaskClient
from workers.beat._jobs import JOBS, Job, submit_job

__all__ = ["JOBS", "Beat", "Job", "SubmitError", "TaskClient", "submit_job"]
