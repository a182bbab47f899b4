"""Task data shared by the API server and the workers: records, the event log, attempts,
the publish outbox, the wire mapping and the RabbitMQ topology.

The server adds submits, reads and streams (``server.tasks``); the workers claim and run
attempts (``workers``). Neither needs the other's code: both meet here and in the database.
"""

from core.tasks._attempts import AttemptStore, Claim, ClaimOutcome, Retry
from core.tasks._broker import (
    BrokerSettings,
    NotificationListener,
    TaskPublisher,
    configure_celery,
    dead_letter_queue,
    declare_topology,
    events_exchange,
    notification,
    publish_run,
)
from core.tasks._depth import QueueFigures, queue_figures
from core.tasks._jobs import JOBS, Job
from core.tasks._outbox import OutboxItem
from core.tasks._purge import DEFAULT_PURGE_BATCH_SIZE, PurgeResult, purge_tasks
from core.tasks._record import TaskRecord
from core.tasks._wire import (
    DOMAIN,
    TERMINAL_STATES,
    celery_task_name,
    error_status,
    kind_fields,
    submit_method_name,
    to_proto,
)

__all__ = [
    "DEFAULT_PURGE_BATCH_SIZE",
    "DOMAIN",
    "JOBS",
    "TERMINAL_STATES",
    "AttemptStore",
    "BrokerSettings",
    "Claim",
    "ClaimOutcome",
    "Job",
    "NotificationListener",
    "OutboxItem",
    "PurgeResult",
    "QueueFigures",
    "Retry",
    "TaskPublisher",
    "TaskRecord",
    "celery_task_name",
    "configure_celery",
    "dead_letter_queue",
    "declare_topology",
    "error_status",
    "events_exchange",
    "kind_fields",
    "notification",
    "publish_run",
    "purge_tasks",
    "queue_figures",
    "submit_method_name",
    "to_proto",
]
