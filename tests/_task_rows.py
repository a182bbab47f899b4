"""Task rows written straight into a database, for tests that need chosen times.

Submitting through the API stamps the current time; statistics, purges, retention and the
job-time gauges are about old and finished tasks, so those tests insert the rows themselves.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from agentic.tasks.v1 import tasks_pb2 as tpb
from sqlalchemy import Engine, delete, insert

from core.db import TaskEventRow, TaskRow
from core.tasks._record import FRESH_ATTEMPT
from tests._identity import ADMIN

__all__ = ["add_task", "clear_tasks"]


def add_task(
    engine: Engine,
    *,
    kind: int = tpb.TASK_KIND_PROBE,
    state: int = tpb.TASK_STATE_SUCCEEDED,
    created: datetime,
    started: datetime | None = None,
    ended: datetime | None = None,
    updated: datetime | None = None,
    events: int = 2,
) -> str:
    """Insert one task row (and ``events`` event rows) with the given times."""
    task_id = str(uuid.uuid4())
    with engine.begin() as connection:
        connection.execute(
            insert(TaskRow),
            {
                "id": task_id,
                "kind": kind,
                "state": state,
                "priority": 0,
                "owner_id": ADMIN,
                "project_id": None,
                "request_id": str(uuid.uuid4()),
                "request_hash": "0" * 64,
                "spec": b"",
                "attempt": 1,
                **FRESH_ATTEMPT,
                "create_time": created,
                "update_time": updated or ended or started or created,
                "start_time": started,  # after FRESH_ATTEMPT: the times are chosen
                "end_time": ended,
                "last_sequence": events,
                "dispatch_time": None,
            },
        )
        for sequence in range(1, events + 1):
            connection.execute(
                insert(TaskEventRow),
                {"task_id": task_id, "sequence": sequence, "time": created, "data": b""},
            )
    return task_id


def clear_tasks(engine: Engine) -> None:
    """Delete every task and task event."""
    with engine.begin() as connection:
        connection.execute(delete(TaskEventRow))
        connection.execute(delete(TaskRow))
