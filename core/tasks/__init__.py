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
    declare_topology,
    events_exchange,
    notification,
    publish_run,
)
from core.tasks._outbox import OutboxItem
from core.tasks._record import TaskRecord
from core.tasks._wire import (
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
    "celery_task_name",
    "configure_celery",
    "declare_topology",
    "error_status",
    "events_exchange",
    "kind_fields",
    "notification",
    "publish_run",
    "to_proto",
]
