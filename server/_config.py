"""Server configuration: a frozen dataclass read from the environment once, at start-up.

Each field declares its variable, default and meaning once (``core.config.setting``); the
README's "API server" table is rendered from these declarations (``make docs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from core.backup import BackupConfig
from core.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_OBJECT_STORE_URL,
    Alias,
    ConfigError,
    address,
    boolean,
    integer,
    number,
    read_env,
    setting,
    upper,
)
from server.auth import Role

__all__ = ["DEFAULT_DATABASE_URL", "ConfigError", "ServerConfig"]

_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
_NONNEGATIVE = number()
_POSITIVE = number(positive=True)
_ROLE_VALUES = tuple(role.value for role in Role)


def _names(raw: str) -> tuple[str, ...]:
    """A comma-separated list of subjects."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _roles(raw: str) -> tuple[str, ...]:
    """A comma-separated list of role names (the ``roles`` claim's values)."""
    roles = _names(raw)
    unknown = [role for role in roles if role not in _ROLE_VALUES]
    if unknown:
        raise ValueError(f"names unknown role {unknown[0]!r} (known: {', '.join(_ROLE_VALUES)})")
    return roles


# AGENTIC_EVENTS_URL, the former broker of the domain events: a URL now names the one broker
# (when AGENTIC_BROKER_URL is unset); empty switched the events off, as
# AGENTIC_EVENTS_ENABLED=false does now.
_EVENTS_URL_AS_BROKER = Alias(
    "AGENTIC_EVENTS_URL",
    convert=lambda raw: raw.strip() or None,
    doc="the former broker of domain events; empty means `AGENTIC_EVENTS_ENABLED=false`",
    advice="set AGENTIC_BROKER_URL (one broker for tasks and events) instead; "
    "AGENTIC_EVENTS_ENABLED=false switches domain events off",
)
_EVENTS_URL_AS_SWITCH = Alias(
    "AGENTIC_EVENTS_URL",
    convert=lambda raw: None if raw.strip() else "false",
    doc="set but empty switches domain events off",
    advice=_EVENTS_URL_AS_BROKER.advice,
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the API server reads from its environment."""

    listen_address: str = setting(
        "AGENTIC_LISTEN_ADDRESS",
        "127.0.0.1:50051",
        doc="gRPC listen address (port 0 picks a free port)",
    )
    database_url: str = setting(
        "DATABASE_URL",
        DEFAULT_DATABASE_URL,
        doc="SQLAlchemy URL; `postgresql://user@host:5432/db` uses PostgreSQL through psycopg 3",
    )
    db_auto_migrate: bool = setting(
        "AGENTIC_DB_AUTO_MIGRATE",
        True,
        parse=boolean,
        doc="run Alembic migrations to head at start-up",
    )
    db_pool_size: int = setting(
        "AGENTIC_DB_POOL_SIZE",
        8,
        parse=integer(minimum=1),
        doc="database connections, and the threads that run database calls",
    )
    metrics_address: str = setting(
        "AGENTIC_METRICS_ADDRESS",
        "127.0.0.1:9464",
        parse=address,
        when_empty="",
        doc="host:port of the Prometheus `/metrics` endpoint (port 0 picks a free port, "
        "reported in the ready file); set but empty disables it",
    )
    max_receive_message_bytes: int = setting(
        "AGENTIC_MAX_RECEIVE_MESSAGE_BYTES",
        4 * 1024 * 1024,
        parse=integer(minimum=1024),
        doc="largest request accepted (larger: RESOURCE_EXHAUSTED)",
    )
    max_send_message_bytes: int = setting(
        "AGENTIC_MAX_SEND_MESSAGE_BYTES",
        4 * 1024 * 1024,
        parse=integer(minimum=1024),
        doc="largest response sent",
    )
    keepalive_time_seconds: int = setting(
        "AGENTIC_KEEPALIVE_TIME_SECONDS",
        60,
        parse=integer(minimum=1),
        doc="ping idle client connections this often",
    )
    keepalive_timeout_seconds: int = setting(
        "AGENTIC_KEEPALIVE_TIMEOUT_SECONDS",
        20,
        parse=integer(minimum=1),
        doc="drop a connection whose ping goes unanswered",
    )
    shutdown_grace_seconds: float = setting(
        "AGENTIC_SHUTDOWN_GRACE_SECONDS",
        10.0,
        parse=_NONNEGATIVE,
        doc="on SIGTERM: health turns NOT_SERVING, then in-flight RPCs get this long",
    )
    cache_address: str = setting(
        "AGENTIC_CACHE_ADDRESS",
        "unix:/run/agentic/cache.sock",
        when_empty="",
        doc="the cache sidecar beside this server: `unix:PATH`, its private socket (the "
        "sidecar's default; this server runs as the sidecar's user), or `host:port` over "
        "mTLS; set but empty: every read goes to the database",
    )
    # It bounds how long a reader waits for another reader's fill of a cold key. Shorter than
    # a database load under load, and waiters give up and stampede the database (measured:
    # 0.25 s let 7-193 of 500 concurrent readers through on 2 cores; 1 s let through none).
    cache_timeout_seconds: float = setting(
        "AGENTIC_CACHE_TIMEOUT_SECONDS",
        1.0,
        parse=_NONNEGATIVE,
        doc="deadline of a cache read (including a wait for another reader's fill); past it "
        "the database answers",
    )
    cache_invalidate_timeout_seconds: float = setting(
        "AGENTIC_CACHE_INVALIDATE_TIMEOUT_SECONDS",
        2.0,
        parse=_NONNEGATIVE,
        doc="the longest a write waits for its synchronous invalidation through the sidecar, "
        "retries included (the caller's deadline may cut it shorter); no wait at all while "
        "the sidecar is known to be unreachable. What is not delivered is redelivered in the "
        "background, and this server reads the database until then. See [The cache](#the-cache)",
    )
    origin_concurrency: int = setting(
        "AGENTIC_ORIGIN_CONCURRENCY",
        32,
        parse=integer(minimum=1),
        doc="database reads in flight at once on the read path (protects the database when "
        "the cache is down)",
    )
    broker_url: str = setting(
        "AGENTIC_BROKER_URL",
        _BROKER,
        when_empty="",
        aliases=(_EVENTS_URL_AS_BROKER,),
        doc="RabbitMQ of the task pipeline and of the domain events (the one broker every "
        "process uses); set but empty: no broker, so tasks are accepted into the outbox but "
        "not published, WatchTask polls the database only, and no domain events go out",
    )
    events_enabled: bool = setting(
        "AGENTIC_EVENTS_ENABLED",
        True,
        parse=boolean,
        aliases=(_EVENTS_URL_AS_SWITCH,),
        doc="publish domain events (`project.created/updated/deleted`) to the broker; "
        "`false` drops them (other hosts' caches then learn of writes only by expiry)",
    )
    events_exchange: str = setting(
        "AGENTIC_EVENTS_EXCHANGE",
        "agentic.events",
        doc="topic exchange of the domain events",
    )
    event_relay_interval_seconds: float = setting(
        "AGENTIC_EVENT_RELAY_INTERVAL_SECONDS",
        0.5,
        parse=_POSITIVE,
        doc="how often each replica publishes domain events from the `event_outbox` table "
        "that the broker has not confirmed yet (any replica's)",
    )
    tasks_enabled: bool = setting(
        "AGENTIC_TASKS_ENABLED",
        True,
        parse=boolean,
        doc="publish tasks to the broker and listen for their notifications; `false` (a "
        "replica that only serves projects, or a test) keeps tasks in the outbox, as an "
        "empty `AGENTIC_BROKER_URL` does, while domain events still go out",
    )
    task_queue: str = setting(
        "AGENTIC_TASK_QUEUE",
        "agentic.tasks",
        doc="the durable work queue the server publishes to and the workers consume",
    )
    task_events_exchange: str = setting(
        "AGENTIC_TASK_EVENTS_EXCHANGE",
        "agentic.task-events",
        doc="fanout exchange of task-event notifications (each server replica binds its own queue)",
    )
    watch_heartbeat_seconds: float = setting(
        "AGENTIC_WATCH_HEARTBEAT_SECONDS",
        5.0,
        parse=_POSITIVE,
        doc="WatchTask heartbeat interval while idle; also how often a watcher re-reads the "
        "event log as a backstop (in case a notification was lost)",
    )
    outbox_relay_interval_seconds: float = setting(
        "AGENTIC_OUTBOX_RELAY_INTERVAL_SECONDS",
        0.5,
        parse=_POSITIVE,
        doc="how often the relay re-publishes outbox rows the broker has not confirmed",
    )
    task_reap_after_seconds: float = setting(
        "AGENTIC_TASK_REAP_AFTER_SECONDS",
        60.0,
        parse=_POSITIVE,
        doc="a RUNNING task whose claim lease expired this long ago with no message left to "
        "run it is re-queued (backstop for lost messages)",
    )
    task_pending_recover_seconds: float = setting(
        "AGENTIC_TASK_PENDING_RECOVER_SECONDS",
        600.0,
        parse=_POSITIVE,
        doc="a PENDING task nobody claimed this long after submit (or its last re-queue) is "
        "queued again: the backstop for a confirmed message the broker later lost (a purged "
        "queue). A task merely waiting in a long queue gets a harmless duplicate: its claim "
        "lets one copy run",
    )
    auth_enabled: bool = setting(
        "AGENTIC_AUTH_ENABLED",
        True,
        parse=boolean,
        doc="require a bearer JWT on every RPC except health and reflection; `false` only for "
        "local experiments (every call then runs as an Administrator)",
    )
    auth_jwks: str = setting(
        "AGENTIC_AUTH_JWKS",
        "",
        shown="(unset; `make run` sets `var/dev-auth/jwks.json`)",
        doc="JWKS file path or `http(s)://` URL with the RS256 public keys (selected by "
        "`kid`); required while authentication is on. A JWKS that cannot be read stops the "
        "start",
    )
    auth_issuer: str = setting(
        "AGENTIC_AUTH_ISSUER", "agentic-dev", doc="required `iss` of every token"
    )
    auth_audience: str = setting(
        "AGENTIC_AUTH_AUDIENCE", "agentic-backend", doc="required `aud` of every token"
    )
    auth_leeway_seconds: float = setting(
        "AGENTIC_AUTH_LEEWAY_SECONDS",
        30.0,
        parse=_NONNEGATIVE,
        doc="clock skew tolerated on `exp`, `nbf`, `iat`",
    )
    auth_jwks_refresh_seconds: float = setting(
        "AGENTIC_AUTH_JWKS_REFRESH_SECONDS",
        30.0,
        parse=_POSITIVE,
        doc="an unknown `kid` re-reads the JWKS at most once per this interval (rotation); a "
        "failed re-read keeps the old keys",
    )
    auth_jwks_max_age_seconds: float = setting(
        "AGENTIC_AUTH_JWKS_MAX_AGE_SECONDS",
        300.0,
        parse=_POSITIVE,
        doc="the JWKS is also re-read this often, so a key removed from it (retired, "
        "compromised) stops being trusted within this time (plus the token cache) even when "
        "no token names an unknown `kid`",
    )
    auth_token_cache_seconds: float = setting(
        "AGENTIC_AUTH_TOKEN_CACHE_SECONDS",
        60.0,
        parse=_NONNEGATIVE,
        doc="a verified token is trusted this long without a new signature check (never past "
        "its `exp`); also how long a key removed from the JWKS still admits tokens already "
        "seen",
    )
    session_idle_seconds: float = setting(
        "AGENTIC_SESSION_IDLE_SECONDS",
        1800.0,
        parse=_POSITIVE,
        doc="a session (a token's `sid`) with no call for this long is refused "
        "(UNAUTHENTICATED, reason `SESSION_EXPIRED`). Tracked in the cache sidecar's "
        "`sessions` namespace, whose `ttl_seconds` must be at least this (the sidecar owns "
        "it); not enforced while that namespace cannot answer. See [Sessions](#sessions)",
    )
    session_max_age_seconds: float = setting(
        "AGENTIC_SESSION_MAX_AGE_SECONDS",
        43200.0,
        parse=_POSITIVE,
        doc="a session older than this (from its first token's `iat` this server knows of) "
        "is refused with `SESSION_EXPIRED`, however active it is",
    )
    session_touch_interval_seconds: float = setting(
        "AGENTIC_SESSION_TOUCH_INTERVAL_SECONDS",
        30.0,
        parse=_POSITIVE,
        doc="a session's last activity is written to the sidecar at most once per this "
        "interval, in the background (a session may so expire up to this much before "
        "its idle timeout)",
    )
    session_idle_tracking: bool = setting(
        "AGENTIC_SESSION_IDLE_TRACKING",
        True,
        parse=boolean,
        doc="track idle sessions in the cache sidecar; `false` leaves the idle timeout "
        "unenforced (revocation, the `sid` requirement and the maximum age stay)",
    )
    sessionless_subjects: tuple[str, ...] = setting(
        "AGENTIC_SESSIONLESS_SUBJECTS",
        ("agentic-beat",),
        parse=_names,
        when_empty=(),
        doc="comma-separated subjects (`sub`) of service accounts: their tokens may lack a "
        "`sid`, and are never idled out nor aged out (they can still be revoked). Every "
        "other token without a `sid` is refused (reason `SESSION_REQUIRED`); set but empty "
        "allows none",
    )
    sessionless_roles: tuple[str, ...] = setting(
        "AGENTIC_SESSIONLESS_ROLES",
        (),
        parse=_roles,
        doc="comma-separated roles whose holders are service accounts in the same sense "
        "(e.g. `administrator` for a deployment whose operators use long-lived tokens)",
    )
    session_revocation_poll_seconds: float = setting(
        "AGENTIC_SESSION_REVOCATION_POLL_SECONDS",
        0.5,
        parse=_POSITIVE,
        doc="how often the server reads new session revocations from the database (a "
        "revocation made on another replica is refused here within this, plus one read)",
    )
    session_revocation_retain_seconds: float = setting(
        "AGENTIC_SESSION_REVOCATION_RETAIN_SECONDS",
        31 * 86400.0,
        parse=_POSITIVE,
        doc="a revocation is kept (in memory on every server) this long, and at least until "
        "the revoked token expires: longer than any token lifetime your identity provider "
        "issues (the beat's development token lives 30 days)",
    )
    tls_cert_file: str = setting(
        "AGENTIC_TLS_CERT_FILE",
        "",
        doc="PEM certificate of the API server; with the key, the server speaks TLS only",
    )
    tls_key_file: str = setting(
        "AGENTIC_TLS_KEY_FILE", "", doc="PEM private key of that certificate"
    )
    tls_client_ca_file: str = setting(
        "AGENTIC_TLS_CLIENT_CA_FILE",
        "",
        doc="when set, API clients must present a certificate of this CA (mTLS)",
    )
    cache_server_ca_file: str = setting(
        "AGENTIC_CACHE_SERVER_CA_FILE",
        "",
        doc="CA of the sidecar's certificate: set it to talk TLS to the sidecar",
    )
    cache_client_cert_file: str = setting(
        "AGENTIC_CACHE_CLIENT_CERT_FILE",
        "",
        doc="this server's client certificate towards a sidecar that requires mTLS",
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
    max_concurrent_rpcs: int = setting(
        "AGENTIC_MAX_CONCURRENT_RPCS",
        512,
        parse=integer(minimum=1),
        doc="unary calls in flight at once; more get RESOURCE_EXHAUSTED with a RetryInfo",
    )
    max_pending_requests: int = setting(
        "AGENTIC_MAX_PENDING_REQUESTS",
        20_000,
        parse=integer(minimum=1),
        doc="calls gRPC may hold before the server picks them up (a burst of reconnecting "
        "watchers); gRPC cancels calls beyond it (its own default is 1,000)",
    )
    max_watch_streams_per_principal: int = setting(
        "AGENTIC_MAX_WATCH_STREAMS_PER_PRINCIPAL",
        100,
        parse=integer(minimum=1),
        doc="open WatchTask streams one principal may hold; more get RESOURCE_EXHAUSTED with a "
        "RetryInfo",
    )
    submit_rate_per_second: float = setting(
        "AGENTIC_SUBMIT_RATE_PER_SECOND",
        20.0,
        parse=_POSITIVE,
        doc="sustained task submits per principal (token bucket)",
    )
    submit_burst: int = setting(
        "AGENTIC_SUBMIT_BURST",
        100,
        parse=integer(minimum=1),
        doc="submits a principal may make at once above that rate; beyond: RESOURCE_EXHAUSTED "
        "with the wait in a RetryInfo",
    )
    object_store_url: str = setting(
        "AGENTIC_OBJECT_STORE_URL",
        DEFAULT_OBJECT_STORE_URL,
        doc="where artifact bytes live: `file:///path` (a directory; relative as "
        "`file:var/objects`) or `s3://bucket/prefix` (boto3: endpoint, region and credentials "
        "from the usual `AWS_*` variables, e.g. `AWS_ENDPOINT_URL` for MinIO). Workers must "
        "use the same store. See [Artifacts](#artifacts)",
    )
    object_store_part_bytes: int = setting(
        "AGENTIC_OBJECT_STORE_PART_BYTES",
        8 * 1024 * 1024,
        parse=integer(minimum=5 * 1024 * 1024),
        doc="an upload's durable step: the S3 multipart part size, or the bytes the file "
        "store writes between fsyncs. A killed server loses at most this much of an upload "
        "in flight (the client resumes from the committed size)",
    )
    object_io_threads: int = setting(
        "AGENTIC_OBJECT_IO_THREADS",
        8,
        parse=integer(minimum=1),
        doc="threads doing object-store IO (apart from the database threads)",
    )
    artifact_max_bytes: int = setting(
        "AGENTIC_ARTIFACT_MAX_BYTES",
        5 * 1024**3,
        parse=integer(minimum=1),
        doc="largest artifact: a larger declared size is INVALID_ARGUMENT, writing past it "
        "RESOURCE_EXHAUSTED",
    )
    project_quota_bytes: int = setting(
        "AGENTIC_PROJECT_QUOTA_BYTES",
        100 * 1024**3,
        parse=integer(minimum=0),
        doc="artifact bytes a project may hold (ready artifacts, plus each open upload's "
        "declared or committed size); beyond: RESOURCE_EXHAUSTED `QUOTA_EXCEEDED`",
    )
    max_open_uploads: int = setting(
        "AGENTIC_MAX_OPEN_UPLOADS",
        20,
        parse=integer(minimum=1),
        doc="unfinished uploads one principal may have at once; beyond: RESOURCE_EXHAUSTED "
        "`TOO_MANY_OPEN_UPLOADS`",
    )
    upload_expire_seconds: float = setting(
        "AGENTIC_UPLOAD_EXPIRE_SECONDS",
        24 * 3600.0,
        parse=_POSITIVE,
        doc="an upload not finished this long after CreateUpload expires: `python -m "
        "server.artifacts expire` marks it FAILED and removes its bytes",
    )
    upload_writer_lease_seconds: float = setting(
        "AGENTIC_UPLOAD_WRITER_LEASE_SECONDS",
        15.0,
        parse=_POSITIVE,
        doc="how long a Write stream's hold on its upload outlives the stream's last sign of "
        "life: after a server is killed mid-upload, a resuming client waits at most this long "
        "(ABORTED `UPLOAD_BUSY` until then)",
    )
    ready_file: str = setting(
        "AGENTIC_READY_FILE",
        "",
        doc='write `{"grpc_port": …, "metrics_port": …}` here once serving (used by '
        "`make run` and tests)",
    )
    log_level: str = setting("AGENTIC_LOG_LEVEL", "INFO", parse=upper, doc="Python logging level")
    # Where AdminService.ListBackups reads: the backup settings (the README's "Backups"
    # table), declared once in core.backup and read with the rest.
    backup: BackupConfig = field(default_factory=BackupConfig)

    @property
    def events_broker_url(self) -> str:
        """The broker domain events go to; empty when they are switched off."""
        return self.broker_url if self.events_enabled else ""

    @property
    def tasks_broker_url(self) -> str:
        """The broker of the task pipeline; empty when tasks are not published."""
        return self.broker_url if self.tasks_enabled else ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerConfig:
        """Read and check every setting; raise ConfigError naming the bad variable."""
        config = replace(read_env(cls, env), backup=read_env(BackupConfig, env))
        config._check()
        return config

    def _check(self) -> None:
        if self.auth_enabled and not self.auth_jwks:
            raise ConfigError(
                "AGENTIC_AUTH_JWKS must name a JWKS file or URL while authentication is on "
                "(AGENTIC_AUTH_ENABLED=true); for development, `make run` makes a key set "
                "(README, Security: development keys)"
            )
        pairs = (
            (
                "AGENTIC_TLS_CERT_FILE",
                self.tls_cert_file,
                "AGENTIC_TLS_KEY_FILE",
                self.tls_key_file,
            ),
            (
                "AGENTIC_CACHE_CLIENT_CERT_FILE",
                self.cache_client_cert_file,
                "AGENTIC_CACHE_CLIENT_KEY_FILE",
                self.cache_client_key_file,
            ),
        )
        for cert_name, cert, key_name, key in pairs:
            if bool(cert) != bool(key):
                raise ConfigError(f"set both {cert_name} and {key_name}, or neither")
        if self.session_touch_interval_seconds >= self.session_idle_seconds:
            raise ConfigError(
                "AGENTIC_SESSION_TOUCH_INTERVAL_SECONDS must be shorter than "
                "AGENTIC_SESSION_IDLE_SECONDS (activity is written once per interval)"
            )
        if self.session_max_age_seconds < self.session_idle_seconds:
            raise ConfigError(
                "AGENTIC_SESSION_MAX_AGE_SECONDS must be at least AGENTIC_SESSION_IDLE_SECONDS"
            )
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError(
                "AGENTIC_TLS_CLIENT_CA_FILE needs AGENTIC_TLS_CERT_FILE and _KEY_FILE"
            )
        if self.cache_client_cert_file and not self.cache_server_ca_file:
            raise ConfigError("AGENTIC_CACHE_CLIENT_CERT_FILE needs AGENTIC_CACHE_SERVER_CA_FILE")
