"""Worker configuration: a frozen dataclass read from the environment once, at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from core.config import (
    DEFAULT_DATABASE_URL,
    ConfigError,
    env_bool,
    env_float,
    env_int,
    env_positive,
)

__all__ = ["ConfigError", "WorkerConfig"]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker reads from its environment."""

    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    """AGENTIC_BROKER_URL: RabbitMQ of the task pipeline."""
    database_url: str = DEFAULT_DATABASE_URL
    """DATABASE_URL: the API server's database (the server migrates it)."""
    task_queue: str = "agentic.tasks"
    """AGENTIC_TASK_QUEUE: the work queue to consume (the servers publish to the same)."""
    task_events_exchange: str = "agentic.task-events"
    """AGENTIC_TASK_EVENTS_EXCHANGE: fanout exchange the event notifications go to."""
    concurrency: int = 2
    """AGENTIC_WORKER_CONCURRENCY: tasks run at once (prefork child processes)."""
    consumer_timeout_seconds: float = 1800.0
    """AGENTIC_BROKER_CONSUMER_TIMEOUT_SECONDS: the broker's ``consumer_timeout``.

    RabbitMQ closes the channel of a consumer that holds an unacknowledged delivery longer
    than this (default 30 min) and redelivers the message, which would run a long task a
    second time. Messages are acknowledged only after the task ran (acks late), so every
    kind's hard time limit (plus the longest countdown a message waits for) must stay below
    it: the worker refuses to start otherwise (``workers._registry.check_registry``).
    Raise both together (``consumer_timeout`` in rabbitmq.conf, then this variable).
    """
    claim_lease_seconds: float = 30.0
    """AGENTIC_CLAIM_LEASE_SECONDS: a running attempt's claim lasts this long unless renewed
    (renewed every third of it); after a worker died its task is taken over this late."""
    cancel_grace_seconds: float = 10.0
    """AGENTIC_CANCEL_GRACE_SECONDS: a task asked to stop that has not stopped after this
    long is stopped hard (its process is killed) and ends CANCELLED."""
    max_deliveries: int = 5
    """AGENTIC_TASK_MAX_DELIVERIES: claims of one attempt (each one lost its worker) before
    the task is FAILED as poison and its message dead-lettered."""
    db_pool_size: int = 2
    """AGENTIC_DB_POOL_SIZE: database connections per worker process (task + watchdog).

    On PostgreSQL the task thread and the watchdog thread each keep one between calls
    (``server.tasks.AttemptStore``); a rare multi-statement write (scheduling a retry)
    hands the task thread's back to the pool first, so 2 is enough."""
    worker_name: str = ""
    """AGENTIC_WORKER_NAME: Celery node name (``name@host``); empty: Celery's default."""
    ready_file: str = ""
    """AGENTIC_READY_FILE: if set, ``{"pid": ...}`` is written here once consuming."""
    log_level: str = "INFO"
    """AGENTIC_LOG_LEVEL: Python logging level."""
    without_gossip: bool = True
    """AGENTIC_WORKER_WITHOUT_GOSSIP: no gossip, mingle or event heartbeats between workers
    (they coordinate through the database, not through Celery's cluster chatter)."""
    task_kind_modules: tuple[str, ...] = ()
    """AGENTIC_TASK_KIND_MODULES: comma-separated modules whose ``REGISTRATIONS`` (a sequence
    of ``workers.Registration``) add task kinds to the built-in ones at start."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        """Read and check every setting; raise ConfigError naming the bad variable."""
        e = os.environ if env is None else env
        d = cls()
        config = cls(
            broker_url=e.get("AGENTIC_BROKER_URL", "") or d.broker_url,
            database_url=e.get("DATABASE_URL", "") or d.database_url,
            task_queue=e.get("AGENTIC_TASK_QUEUE", "") or d.task_queue,
            task_events_exchange=e.get("AGENTIC_TASK_EVENTS_EXCHANGE", "")
            or d.task_events_exchange,
            concurrency=env_int(e, "AGENTIC_WORKER_CONCURRENCY", d.concurrency, minimum=1),
            consumer_timeout_seconds=env_positive(
                e, "AGENTIC_BROKER_CONSUMER_TIMEOUT_SECONDS", d.consumer_timeout_seconds
            ),
            claim_lease_seconds=env_positive(
                e, "AGENTIC_CLAIM_LEASE_SECONDS", d.claim_lease_seconds
            ),
            cancel_grace_seconds=env_float(
                e, "AGENTIC_CANCEL_GRACE_SECONDS", d.cancel_grace_seconds
            ),
            max_deliveries=env_int(e, "AGENTIC_TASK_MAX_DELIVERIES", d.max_deliveries, minimum=1),
            db_pool_size=env_int(e, "AGENTIC_DB_POOL_SIZE", d.db_pool_size, minimum=2),
            worker_name=e.get("AGENTIC_WORKER_NAME", d.worker_name),
            ready_file=e.get("AGENTIC_READY_FILE", d.ready_file),
            log_level=e.get("AGENTIC_LOG_LEVEL", d.log_level).upper(),
            without_gossip=env_bool(e, "AGENTIC_WORKER_WITHOUT_GOSSIP", d.without_gossip),
            task_kind_modules=tuple(
                name.strip()
                for name in e.get("AGENTIC_TASK_KIND_MODULES", "").split(",")
                if name.strip()
            ),
        )
        if config.claim_lease_seconds < 1:
            raise ConfigError("AGENTIC_CLAIM_LEASE_SECONDS must be >= 1")
        return config
