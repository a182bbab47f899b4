"""Tasks: durable submits, the event log, the outbox relay, and the TaskService servicer.

``server.tasks`` is also what the workers use to reach the database (``AttemptStore``)
and the broker topology (``BrokerSettings``, ``configure_celery``); it imports no worker
code. See ``workers`` for how tasks run and how to add a kind.
"""

from server.tasks._attempts import AttemptStore, Claim, ClaimOutcome, Retry
from server.tasks._broker import (
    BrokerSettings,
    NotificationListener,
    TaskPublisher,
    configure_celery,
    declare_topology,
    notification,
    publish_run,
)
from server.tasks._facade import Tasks, request_hash
from server.tasks._outbox import OutboxItem
from server.tasks._record import TaskRecord
from server.tasks._service import TaskService
from server.tasks._store import TaskStore
from server.tasks._wire import (
    DOMAIN,
    TERMINAL_STATES,
    celery_task_name,
    error_status,
    kind_fields,
    to_proto,
)

__all__ = [
    "DOMAIN",
    "TERMINAL_STATES",
    "AttemptStore",
    "BrokerSettings",
    "Claim",
    "ClaimOutcome",
    "NotificationListener",
    "OutboxItem",
    "Retry",
    "TaskPublisher",
    "TaskRecord",
    "TaskService",
    "TaskStore",
    "Tasks",
    "celery_task_name",
    "configure_celery",
    "declare_topology",
    "error_status",
    "kind_fields",
    "notification",
    "publish_run",
    "request_hash",
    "to_proto",
]
