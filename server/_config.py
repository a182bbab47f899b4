"""Server configuration: a frozen dataclass read from the environment once, at start-up."""

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

__all__ = ["DEFAULT_DATABASE_URL", "ConfigError", "ServerConfig"]


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
    """AGENTIC_CACHE_INVALIDATE_TIMEOUT_SECONDS: the longest a write waits for the sidecar to
    take its invalidations (retries included; the caller's deadline may cut it shorter).
    A write does not wait at all while the sidecar is known to be unreachable; what is not
    delivered is redelivered in the background, and this server reads the database until
    then."""
    origin_concurrency: int = 32
    """AGENTIC_ORIGIN_CONCURRENCY: database reads in flight at once on the read path."""
    events_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    """AGENTIC_EVENTS_URL: broker for domain events; empty disables publishing."""
    events_exchange: str = "agentic.events"
    """AGENTIC_EVENTS_EXCHANGE: topic exchange the domain events go to."""
    event_relay_interval_seconds: float = 0.5
    """AGENTIC_EVENT_RELAY_INTERVAL_SECONDS: how often this replica publishes domain events
    from the event outbox that the broker has not confirmed yet (any replica's)."""
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
    auth_enabled: bool = True
    """AGENTIC_AUTH_ENABLED: require a bearer JWT on every RPC except health and reflection.
    Off only for local experiments: every call then runs as an administrator."""
    auth_jwks: str = ""
    """AGENTIC_AUTH_JWKS: JWKS file path or http(s) URL with the token-signing public keys
    (RS256, selected by kid); required while authentication is on."""
    auth_issuer: str = "agentic-dev"
    """AGENTIC_AUTH_ISSUER: required ``iss`` of every token."""
    auth_audience: str = "agentic-backend"
    """AGENTIC_AUTH_AUDIENCE: required ``aud`` of every token."""
    auth_leeway_seconds: float = 30.0
    """AGENTIC_AUTH_LEEWAY_SECONDS: clock skew tolerated on exp, nbf and iat."""
    auth_jwks_refresh_seconds: float = 30.0
    """AGENTIC_AUTH_JWKS_REFRESH_SECONDS: at most one JWKS re-read per this interval, done
    when a token names an unknown kid (key rotation); a failed re-read keeps the old keys."""
    auth_jwks_max_age_seconds: float = 300.0
    """AGENTIC_AUTH_JWKS_MAX_AGE_SECONDS: the JWKS is also re-read this often, so a key
    removed from it (retired, compromised) stops being trusted within this time even when
    no token names an unknown kid."""
    auth_token_cache_seconds: float = 60.0
    """AGENTIC_AUTH_TOKEN_CACHE_SECONDS: a verified token is trusted this long without a new
    signature check (never past its exp); also how long a key removed from the JWKS keeps
    admitting tokens already seen."""
    tls_cert_file: str = ""
    """AGENTIC_TLS_CERT_FILE: PEM certificate of the API server; set with the key to serve TLS."""
    tls_key_file: str = ""
    """AGENTIC_TLS_KEY_FILE: PEM private key of the API server."""
    tls_client_ca_file: str = ""
    """AGENTIC_TLS_CLIENT_CA_FILE: when set, API clients must present a certificate of this CA."""
    cache_server_ca_file: str = ""
    """AGENTIC_CACHE_SERVER_CA_FILE: CA of the sidecar's certificate; set to talk mTLS to it."""
    cache_client_cert_file: str = ""
    """AGENTIC_CACHE_CLIENT_CERT_FILE: this server's client certificate towards the sidecar."""
    cache_client_key_file: str = ""
    """AGENTIC_CACHE_CLIENT_KEY_FILE: the key of that client certificate."""
    cache_server_name: str = ""
    """AGENTIC_CACHE_SERVER_NAME: name to check the sidecar's certificate against, when it
    is not the host of AGENTIC_CACHE_ADDRESS."""
    max_concurrent_rpcs: int = 512
    """AGENTIC_MAX_CONCURRENT_RPCS: unary calls in flight at once; more are RESOURCE_EXHAUSTED."""
    max_pending_requests: int = 20_000
    """AGENTIC_MAX_PENDING_REQUESTS: calls gRPC may hold waiting to be picked up (a burst of
    reconnecting watchers); gRPC cancels calls beyond it (its own default is 1,000)."""
    max_watch_streams_per_principal: int = 100
    """AGENTIC_MAX_WATCH_STREAMS_PER_PRINCIPAL: open WatchTask streams one principal may hold."""
    submit_rate_per_second: float = 20.0
    """AGENTIC_SUBMIT_RATE_PER_SECOND: sustained task submits per principal."""
    submit_burst: int = 100
    """AGENTIC_SUBMIT_BURST: submits a principal may make at once above the sustained rate."""
    task_pending_recover_seconds: float = 600.0
    """AGENTIC_TASK_PENDING_RECOVER_SECONDS: a PENDING task nobody claimed this long after
    submit (or after its last re-queue) is queued again: the backstop for a confirmed
    message the broker later lost. A task merely waiting in a long queue gets a duplicate
    message, which its claim in the database makes harmless."""
    ready_file: str = ""
    """AGENTIC_READY_FILE: if set, JSON with the bound ports is written here once serving."""
    log_level: str = "INFO"
    """AGENTIC_LOG_LEVEL: Python logging level."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerConfig:
        """Read and check every setting; raise ConfigError naming the bad variable."""
        config = cls._read(os.environ if env is None else env)
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
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError(
                "AGENTIC_TLS_CLIENT_CA_FILE needs AGENTIC_TLS_CERT_FILE and _KEY_FILE"
            )
        if self.cache_client_cert_file and not self.cache_server_ca_file:
            raise ConfigError("AGENTIC_CACHE_CLIENT_CERT_FILE needs AGENTIC_CACHE_SERVER_CA_FILE")

    @classmethod
    def _read(cls, e: Mapping[str, str]) -> ServerConfig:
        d = cls()
        return cls(
            listen_address=e.get("AGENTIC_LISTEN_ADDRESS", d.listen_address),
            database_url=e.get("DATABASE_URL", "") or d.database_url,
            db_auto_migrate=env_bool(e, "AGENTIC_DB_AUTO_MIGRATE", d.db_auto_migrate),
            db_pool_size=env_int(e, "AGENTIC_DB_POOL_SIZE", d.db_pool_size, minimum=1),
            metrics_address=e.get("AGENTIC_METRICS_ADDRESS", d.metrics_address),
            max_receive_message_bytes=env_int(
                e, "AGENTIC_MAX_RECEIVE_MESSAGE_BYTES", d.max_receive_message_bytes, minimum=1024
            ),
            max_send_message_bytes=env_int(
                e, "AGENTIC_MAX_SEND_MESSAGE_BYTES", d.max_send_message_bytes, minimum=1024
            ),
            keepalive_time_seconds=env_int(
                e, "AGENTIC_KEEPALIVE_TIME_SECONDS", d.keepalive_time_seconds, minimum=1
            ),
            keepalive_timeout_seconds=env_int(
                e, "AGENTIC_KEEPALIVE_TIMEOUT_SECONDS", d.keepalive_timeout_seconds, minimum=1
            ),
            shutdown_grace_seconds=env_float(
                e, "AGENTIC_SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds
            ),
            cache_address=e.get("AGENTIC_CACHE_ADDRESS", d.cache_address),
            cache_timeout_seconds=env_float(
                e, "AGENTIC_CACHE_TIMEOUT_SECONDS", d.cache_timeout_seconds
            ),
            cache_invalidate_timeout_seconds=env_float(
                e, "AGENTIC_CACHE_INVALIDATE_TIMEOUT_SECONDS", d.cache_invalidate_timeout_seconds
            ),
            origin_concurrency=env_int(
                e, "AGENTIC_ORIGIN_CONCURRENCY", d.origin_concurrency, minimum=1
            ),
            events_url=e.get("AGENTIC_EVENTS_URL", d.events_url),
            events_exchange=e.get("AGENTIC_EVENTS_EXCHANGE", d.events_exchange),
            event_relay_interval_seconds=env_positive(
                e, "AGENTIC_EVENT_RELAY_INTERVAL_SECONDS", d.event_relay_interval_seconds
            ),
            broker_url=e.get("AGENTIC_BROKER_URL", d.broker_url),
            task_queue=e.get("AGENTIC_TASK_QUEUE", "") or d.task_queue,
            task_events_exchange=e.get("AGENTIC_TASK_EVENTS_EXCHANGE", "")
            or d.task_events_exchange,
            watch_heartbeat_seconds=env_positive(
                e, "AGENTIC_WATCH_HEARTBEAT_SECONDS", d.watch_heartbeat_seconds
            ),
            outbox_relay_interval_seconds=env_positive(
                e, "AGENTIC_OUTBOX_RELAY_INTERVAL_SECONDS", d.outbox_relay_interval_seconds
            ),
            task_reap_after_seconds=env_positive(
                e, "AGENTIC_TASK_REAP_AFTER_SECONDS", d.task_reap_after_seconds
            ),
            auth_enabled=env_bool(e, "AGENTIC_AUTH_ENABLED", d.auth_enabled),
            auth_jwks=e.get("AGENTIC_AUTH_JWKS", d.auth_jwks).strip(),
            auth_issuer=e.get("AGENTIC_AUTH_ISSUER", "") or d.auth_issuer,
            auth_audience=e.get("AGENTIC_AUTH_AUDIENCE", "") or d.auth_audience,
            auth_leeway_seconds=env_float(e, "AGENTIC_AUTH_LEEWAY_SECONDS", d.auth_leeway_seconds),
            auth_jwks_refresh_seconds=env_positive(
                e, "AGENTIC_AUTH_JWKS_REFRESH_SECONDS", d.auth_jwks_refresh_seconds
            ),
            auth_jwks_max_age_seconds=env_positive(
                e, "AGENTIC_AUTH_JWKS_MAX_AGE_SECONDS", d.auth_jwks_max_age_seconds
            ),
            auth_token_cache_seconds=env_float(
                e, "AGENTIC_AUTH_TOKEN_CACHE_SECONDS", d.auth_token_cache_seconds
            ),
            tls_cert_file=e.get("AGENTIC_TLS_CERT_FILE", d.tls_cert_file),
            tls_key_file=e.get("AGENTIC_TLS_KEY_FILE", d.tls_key_file),
            tls_client_ca_file=e.get("AGENTIC_TLS_CLIENT_CA_FILE", d.tls_client_ca_file),
            cache_server_ca_file=e.get("AGENTIC_CACHE_SERVER_CA_FILE", d.cache_server_ca_file),
            cache_client_cert_file=e.get(
                "AGENTIC_CACHE_CLIENT_CERT_FILE", d.cache_client_cert_file
            ),
            cache_client_key_file=e.get("AGENTIC_CACHE_CLIENT_KEY_FILE", d.cache_client_key_file),
            cache_server_name=e.get("AGENTIC_CACHE_SERVER_NAME", d.cache_server_name),
            max_concurrent_rpcs=env_int(
                e, "AGENTIC_MAX_CONCURRENT_RPCS", d.max_concurrent_rpcs, minimum=1
            ),
            max_pending_requests=env_int(
                e, "AGENTIC_MAX_PENDING_REQUESTS", d.max_pending_requests, minimum=1
            ),
            max_watch_streams_per_principal=env_int(
                e,
                "AGENTIC_MAX_WATCH_STREAMS_PER_PRINCIPAL",
                d.max_watch_streams_per_principal,
                minimum=1,
            ),
            submit_rate_per_second=env_positive(
                e, "AGENTIC_SUBMIT_RATE_PER_SECOND", d.submit_rate_per_second
            ),
            submit_burst=env_int(e, "AGENTIC_SUBMIT_BURST", d.submit_burst, minimum=1),
            task_pending_recover_seconds=env_positive(
                e, "AGENTIC_TASK_PENDING_RECOVER_SECONDS", d.task_pending_recover_seconds
            ),
            ready_file=e.get("AGENTIC_READY_FILE", d.ready_file),
            log_level=e.get("AGENTIC_LOG_LEVEL", d.log_level).upper(),
        )
