"""Server configuration: a frozen dataclass read from the environment once, at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///var/agentic.db"


class ConfigError(ValueError):
    """An environment variable has a value the server cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={value} must be >= 0")
    return value


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name}={value} must be > 0")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (true/false)")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the API server reads from its environment. README documents each."""

    listen_address: str = "127.0.0.1:50051"
    """AGENTIC_LISTEN_ADDRESS: host:port of the gRPC server (port 0 picks a free port)."""
    database_url: str = DEFAULT_DATABASE_URL
    """DATABASE_URL: SQLAlchemy URL; SQLite file by default, postgresql://... for PostgreSQL."""
    db_auto_migrate: bool = True
    """AGENTIC_DB_AUTO_MIGRATE: run Alembic migrations to head at start-up."""
    db_pool_size: int = 8
    """AGENTIC_DB_POOL_SIZE: database connections, and threads that run database calls."""
    metrics_address: str = "127.0.0.1:9464"
    """AGENTIC_METRICS_ADDRESS: host:port of the Prometheus endpoint; empty disables it."""
    max_receive_message_bytes: int = 4 * 1024 * 1024
    """AGENTIC_MAX_RECEIVE_MESSAGE_BYTES: largest request accepted."""
    max_send_message_bytes: int = 4 * 1024 * 1024
    """AGENTIC_MAX_SEND_MESSAGE_BYTES: largest response sent."""
    keepalive_time_seconds: int = 60
    """AGENTIC_KEEPALIVE_TIME_SECONDS: ping an idle client connection this often."""
    keepalive_timeout_seconds: int = 20
    """AGENTIC_KEEPALIVE_TIMEOUT_SECONDS: drop a connection whose ping is not answered."""
    shutdown_grace_seconds: float = 10.0
    """AGENTIC_SHUTDOWN_GRACE_SECONDS: on SIGTERM, time in-flight RPCs get to finish."""
    cache_address: str = "127.0.0.1:50052"
    """AGENTIC_CACHE_ADDRESS: the cache sidecar beside this server; empty: no cache."""
    cache_timeout_seconds: float = 1.0
    """AGENTIC_CACHE_TIMEOUT_SECONDS: deadline of a cache read; past it the database answers.

    It bounds how long a reader waits for another reader's fill of a cold key. Shorter than
    a database load under load, and waiters give up and stampede the database (measured:
    0.25 s let 7-193 of 500 concurrent readers through on 2 cores; 1 s let through none).
    """
    cache_invalidate_timeout_seconds: float = 2.0
    """AGENTIC_CACHE_INVALIDATE_TIMEOUT_SECONDS: total deadline of a write's invalidation."""
    origin_concurrency: int = 32
    """AGENTIC_ORIGIN_CONCURRENCY: database reads in flight at once on the read path."""
    events_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    """AGENTIC_EVENTS_URL: broker for domain events; empty disables publishing."""
    events_exchange: str = "agentic.events"
    """AGENTIC_EVENTS_EXCHANGE: topic exchange the domain events go to."""
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    """AGENTIC_BROKER_URL: RabbitMQ of the task pipeline; empty: tasks are accepted into the
    outbox but not published, and WatchTask polls the database only."""
    task_queue: str = "agentic.tasks"
    """AGENTIC_TASK_QUEUE: the durable work queue (workers must use the same name)."""
    task_events_exchange: str = "agentic.task-events"
    """AGENTIC_TASK_EVENTS_EXCHANGE: fanout exchange of task event notifications."""
    watch_heartbeat_seconds: float = 5.0
    """AGENTIC_WATCH_HEARTBEAT_SECONDS: an idle WatchTask stream gets a heartbeat this often
    (and re-reads the database, in case a notification was lost)."""
    outbox_relay_interval_seconds: float = 0.5
    """AGENTIC_OUTBOX_RELAY_INTERVAL_SECONDS: how often unconfirmed publishes are retried."""
    task_reap_after_seconds: float = 60.0
    """AGENTIC_TASK_REAP_AFTER_SECONDS: a running task whose claim lease expired this long ago
    with no message left to run it is queued again (backstop for lost messages)."""
    ready_file: str = ""
    """AGENTIC_READY_FILE: if set, JSON with the bound ports is written here once serving."""
    log_level: str = "INFO"
    """AGENTIC_LOG_LEVEL: Python logging level."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerConfig:
        """Read and check every setting; raise ConfigError naming the bad variable."""
        e = os.environ if env is None else env
        d = cls()
        return cls(
            listen_address=e.get("AGENTIC_LISTEN_ADDRESS", d.listen_address),
            database_url=e.get("DATABASE_URL", "") or d.database_url,
            db_auto_migrate=_bool(e, "AGENTIC_DB_AUTO_MIGRATE", d.db_auto_migrate),
            db_pool_size=_int(e, "AGENTIC_DB_POOL_SIZE", d.db_pool_size, minimum=1),
            metrics_address=e.get("AGENTIC_METRICS_ADDRESS", d.metrics_address),
            max_receive_message_bytes=_int(
                e, "AGENTIC_MAX_RECEIVE_MESSAGE_BYTES", d.max_receive_message_bytes, minimum=1024
            ),
            max_send_message_bytes=_int(
                e, "AGENTIC_MAX_SEND_MESSAGE_BYTES", d.max_send_message_bytes, minimum=1024
            ),
            keepalive_time_seconds=_int(
                e, "AGENTIC_KEEPALIVE_TIME_SECONDS", d.keepalive_time_seconds, minimum=1
            ),
            keepalive_timeout_seconds=_int(
                e, "AGENTIC_KEEPALIVE_TIMEOUT_SECONDS", d.keepalive_timeout_seconds, minimum=1
            ),
            shutdown_grace_seconds=_float(
                e, "AGENTIC_SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds
            ),
            cache_address=e.get("AGENTIC_CACHE_ADDRESS", d.cache_address),
            cache_timeout_seconds=_float(
                e, "AGENTIC_CACHE_TIMEOUT_SECONDS", d.cache_timeout_seconds
            ),
            cache_invalidate_timeout_seconds=_float(
                e, "AGENTIC_CACHE_INVALIDATE_TIMEOUT_SECONDS", d.cache_invalidate_timeout_seconds
            ),
            origin_concurrency=_int(
                e, "AGENTIC_ORIGIN_CONCURRENCY", d.origin_concurrency, minimum=1
            ),
            events_url=e.get("AGENTIC_EVENTS_URL", d.events_url),
            events_exchange=e.get("AGENTIC_EVENTS_EXCHANGE", d.events_exchange),
            broker_url=e.get("AGENTIC_BROKER_URL", d.broker_url),
            task_queue=e.get("AGENTIC_TASK_QUEUE", "") or d.task_queue,
            task_events_exchange=e.get("AGENTIC_TASK_EVENTS_EXCHANGE", "")
            or d.task_events_exchange,
            watch_heartbeat_seconds=_positive(
                e, "AGENTIC_WATCH_HEARTBEAT_SECONDS", d.watch_heartbeat_seconds
            ),
            outbox_relay_interval_seconds=_positive(
                e, "AGENTIC_OUTBOX_RELAY_INTERVAL_SECONDS", d.outbox_relay_interval_seconds
            ),
            task_reap_after_seconds=_positive(
                e, "AGENTIC_TASK_REAP_AFTER_SECONDS", d.task_reap_after_seconds
            ),
            ready_file=e.get("AGENTIC_READY_FILE", d.ready_file),
            log_level=e.get("AGENTIC_LOG_LEVEL", d.log_level).upper(),
        )
