"""Worker configuration: a frozen dataclass read from the environment once, at start-up.

Each field declares its variable, default and meaning once (``core.config.setting``); the
README's "Worker" table is rendered from these declarations (``make docs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from core.backup import BackupConfig
from core.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_OBJECT_STORE_URL,
    ConfigError,
    address,
    boolean,
    integer,
    number,
    read_env,
    setting,
    upper,
)
from workers._schedule import parse_duration

# RetentionSpec.task_max_age's bounds: TaskService keeps a request_id 7 days.
RETENTION_MIN_AGE_SECONDS = 7 * 86400
RETENTION_MAX_AGE_SECONDS = 3650 * 86400

__all__ = ["ConfigError", "WorkerConfig", "task_limits"]


def task_limits(raw: str) -> tuple[tuple[str, float, float, int], ...]:
    """``kind=soft/hard[/memory_mib],...`` -> ((kind, soft, hard, memory_mib), ...)."""
    limits: dict[str, tuple[str, float, float, int]] = {}
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        name, _, values = entry.partition("=")
        parts = values.split("/")
        if not name.strip() or len(parts) not in (2, 3):
            raise ValueError(f"entry {entry!r} is not kind=soft/hard[/memory_mib]")
        try:
            soft, hard = float(parts[0]), float(parts[1])
            memory = int(parts[2]) if len(parts) == 3 else 0
        except ValueError:
            raise ValueError(f"entry {entry!r} has a value that is not a number") from None
        if not 0 < soft <= hard:
            raise ValueError(f"entry {entry!r} needs 0 < soft <= hard")
        if len(parts) == 3 and memory < 64:
            raise ValueError(f"entry {entry!r} needs memory_mib >= 64")
        limits[name.strip()] = (name.strip(), soft, hard, memory)
    return tuple(limits.values())


def retention_age_seconds(raw: str) -> int:
    """A duration (``30d``, ``720h``) within the bounds RetentionSpec.task_max_age allows."""
    seconds = parse_duration(raw)
    if not RETENTION_MIN_AGE_SECONDS <= seconds <= RETENTION_MAX_AGE_SECONDS:
        raise ValueError(f"{raw!r} is not between 7d and 3650d")
    return seconds


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker reads from its environment."""

    broker_url: str = setting(
        "AGENTIC_BROKER_URL",
        "amqp://guest:guest@127.0.0.1:5672//",
        doc="RabbitMQ of the task pipeline (the same variable as the server's and the "
        "sidecar's); a worker always needs one, so empty means the default",
    )
    database_url: str = setting(
        "DATABASE_URL",
        DEFAULT_DATABASE_URL,
        doc="the API server's database (the server migrates it)",
    )
    object_store_url: str = setting(
        "AGENTIC_OBJECT_STORE_URL",
        DEFAULT_OBJECT_STORE_URL,
        doc="where artifact bytes live: the API server's store (`file:///path` on a shared "
        "file system, or `s3://bucket/prefix` with the `AWS_*` variables); tasks read the "
        "artifacts their specs reference from it",
    )
    task_queue: str = setting(
        "AGENTIC_TASK_QUEUE",
        "agentic.tasks",
        doc="the work queue to consume (the servers publish to the same)",
    )
    task_events_exchange: str = setting(
        "AGENTIC_TASK_EVENTS_EXCHANGE",
        "agentic.task-events",
        doc="fanout exchange the task-event notifications go to",
    )
    concurrency: int = setting(
        "AGENTIC_WORKER_CONCURRENCY",
        2,
        parse=integer(minimum=1),
        doc="tasks run at once (prefork child processes)",
    )
    # RabbitMQ closes the channel of a consumer that holds an unacknowledged delivery longer
    # than its consumer_timeout and redelivers the message, which would run a long task a
    # second time. Messages are acknowledged only after the task ran (acks late), hence the
    # bound that workers._registry.check_registry enforces at start.
    consumer_timeout_seconds: float = setting(
        "AGENTIC_BROKER_CONSUMER_TIMEOUT_SECONDS",
        1800.0,
        parse=number(positive=True),
        doc="the broker's `consumer_timeout` (RabbitMQ's default: 30 min); every kind's hard "
        "time limit (plus the longest countdown a message waits for) must stay below it or "
        "the worker refuses to start. Raise both together (`consumer_timeout` in "
        "rabbitmq.conf, then this variable)",
    )
    claim_lease_seconds: float = setting(
        "AGENTIC_CLAIM_LEASE_SECONDS",
        30.0,
        parse=number(minimum=1),
        doc="a running attempt's claim lasts this long unless renewed (every third of it); "
        "after a worker died its task is taken over this late. At least 1",
    )
    cancel_grace_seconds: float = setting(
        "AGENTIC_CANCEL_GRACE_SECONDS",
        10.0,
        parse=number(),
        doc="a running task asked to stop is killed after this long and ends CANCELLED",
    )
    max_deliveries: int = setting(
        "AGENTIC_TASK_MAX_DELIVERIES",
        5,
        parse=integer(minimum=1),
        doc="claims of one attempt that each lost their worker before the task is FAILED as "
        "poison and its message dead-lettered",
    )
    # On PostgreSQL the task thread and the watchdog thread each keep one connection between
    # calls (server.tasks.AttemptStore); a rare multi-statement write (scheduling a retry)
    # hands the task thread's back to the pool first, so 2 is enough.
    db_pool_size: int = setting(
        "AGENTIC_DB_POOL_SIZE",
        2,
        parse=integer(minimum=2),
        doc="database connections per worker process (the task and its watchdog); at least 2",
    )
    worker_name: str = setting(
        "AGENTIC_WORKER_NAME",
        "",
        shown="(Celery's)",
        doc="Celery node name (`name@host`)",
    )
    metrics_address: str = setting(
        "AGENTIC_WORKER_METRICS_ADDRESS",
        "127.0.0.1:9467",
        parse=address,
        when_empty="",
        doc="host:port of the Prometheus `/metrics` endpoint of `python -m workers` (its "
        "main process serves what every pool child counted; port 0 picks a free port, "
        "reported in the ready file); set but empty disables it",
    )
    ready_file: str = setting(
        "AGENTIC_READY_FILE",
        "",
        doc='`{"pid": …, "metrics_port": …}` is written here once consuming',
    )
    log_level: str = setting("AGENTIC_LOG_LEVEL", "INFO", parse=upper, doc="Python logging level")
    without_gossip: bool = setting(
        "AGENTIC_WORKER_WITHOUT_GOSSIP",
        True,
        parse=boolean,
        doc="no gossip, mingle or event heartbeats between workers: they coordinate through "
        "the database, not through Celery's cluster chatter",
    )
    task_kind_modules: tuple[str, ...] = setting(
        "AGENTIC_TASK_KIND_MODULES",
        (),
        parse=lambda raw: tuple(name.strip() for name in raw.split(",") if name.strip()),
        shown="(none)",
        doc="comma-separated modules, importable by the worker, whose `REGISTRATIONS` "
        "(a sequence of `workers.Registration`) add task kinds to the built-in ones at start "
        "(see Adding a task kind)",
    )
    duckdb_memory_limit_mib: int = setting(
        "AGENTIC_DUCKDB_MEMORY_LIMIT_MIB",
        1024,
        parse=integer(minimum=64),
        doc="memory limit of each DuckDB connection of the dataset kinds (profile, analytics, "
        "the compliance report's traceability read), one per running task: beyond it DuckDB "
        "spills to disk, and a query that cannot spill fails its task "
        "(`MEMORY_LIMIT_EXCEEDED`). Size the worker's memory as concurrency x (this + 256 MiB)",
    )
    duckdb_threads: int = setting(
        "AGENTIC_DUCKDB_THREADS",
        2,
        parse=integer(minimum=1),
        doc="threads of each DuckDB connection",
    )
    work_directory: str = setting(
        "AGENTIC_WORK_DIRECTORY",
        "",
        shown="(the system's temp)",
        doc="where tasks keep their local files: verified copies of artifacts, results "
        "before they are stored, DuckDB's spill files",
    )
    # The compliance report reads custom rule sets through a cache sidecar, like the API
    # server's GetRuleSet; the names and meanings are the server's. Unset (the default), a
    # worker reads them from the database: a worker host need not run a sidecar.
    cache_address: str = setting(
        "AGENTIC_CACHE_ADDRESS",
        "",
        shown="(unset)",
        doc="the cache sidecar the compliance report reads rule sets through (the server's "
        "variable: `unix:PATH` of its socket, the worker running as the sidecar's user, or "
        "`host:port` over mTLS); unset or empty: they are read from the database. An "
        "unreachable sidecar costs a report at most one cache timeout, then the database "
        "answers",
    )
    cache_timeout_seconds: float = setting(
        "AGENTIC_CACHE_TIMEOUT_SECONDS",
        1.0,
        parse=number(),
        doc="deadline of a cache read (including a wait for another reader's fill); past it "
        "the database answers",
    )
    cache_server_ca_file: str = setting(
        "AGENTIC_CACHE_SERVER_CA_FILE",
        "",
        doc="CA of the sidecar's certificate: set it to talk TLS to the sidecar",
    )
    cache_client_cert_file: str = setting(
        "AGENTIC_CACHE_CLIENT_CERT_FILE",
        "",
        doc="this worker's client certificate towards a sidecar that requires mTLS",
    )
    cache_client_key_file: str = setting(
        "AGENTIC_CACHE_CLIENT_KEY_FILE", "", doc="the key of that client certificate"
    )
    cache_server_name: str = setting(
        "AGENTIC_CACHE_SERVER_NAME",
        "",
        doc="name to check the sidecar's certificate against when it is not the host of "
        "`AGENTIC_CACHE_ADDRESS`",
    )

    task_limits: tuple[tuple[str, float, float, int], ...] = setting(
        "AGENTIC_TASK_LIMITS",
        (),
        parse=lambda raw: task_limits(raw),
        shown="(the registry's)",
        doc="per-kind limits replacing the built-in ones (docs/tasks.md lists them): "
        "`kind=soft/hard[/memory_mib]`, comma-separated, e.g. "
        "`profile_dataset=3000/3060/4096,analytics=600/660`: the soft and hard time limits "
        "in seconds and the kind's DuckDB memory limit (default "
        "`AGENTIC_DUCKDB_MEMORY_LIMIT_MIB`). Checked against the broker's consumer timeout "
        "at start like the built-in limits",
    )
    retention_task_max_age_seconds: int = setting(
        "AGENTIC_RETENTION_TASK_MAX_AGE",
        30 * 86400,
        parse=lambda raw: retention_age_seconds(raw),
        shown="30d",
        doc="the retention kind's age of terminal tasks to delete (with their events and "
        "idempotency records) when its spec names none: a duration like `30d`, `720h`; "
        "7 days (TaskService's idempotency window) to 10 years",
    )
    # The backup kind's destination and retention: the settings of `python -m server.backup`
    # (the README's "Backups" table), declared once in core.backup and read with the rest.
    backup: BackupConfig = field(default_factory=BackupConfig)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        """Read and check every setting; raise ConfigError naming the bad variable."""
        config = replace(read_env(cls, env), backup=read_env(BackupConfig, env))
        if bool(config.cache_client_cert_file) != bool(config.cache_client_key_file):
            raise ConfigError(
                "set both AGENTIC_CACHE_CLIENT_CERT_FILE and AGENTIC_CACHE_CLIENT_KEY_FILE, "
                "or neither"
            )
        if config.cache_client_cert_file and not config.cache_server_ca_file:
            raise ConfigError("AGENTIC_CACHE_CLIENT_CERT_FILE needs AGENTIC_CACHE_SERVER_CA_FILE")
        return config
