"""Process configuration, read once from the environment at start-up.

===========================================  =========================================
Variable                                     Meaning (default)
===========================================  =========================================
AGENTIC_CACHE_LISTEN_ADDRESS                 gRPC host:port (127.0.0.1:50052; port 0 =
                                             any free port)
AGENTIC_MEMCACHED_SERVERS                    comma-separated host:port list
                                             (127.0.0.1:11211)
AGENTIC_CACHE_POLICY_FILE                    namespace policy TOML (the shipped
                                             cache_sidecar/namespaces.toml)
AGENTIC_CACHE_METRICS_PORT                   Prometheus port on 127.0.0.1 (9465; 0 = any
                                             free port; set but empty = off)
AGENTIC_AMQP_URL                             broker of domain events
                                             (amqp://guest:guest@127.0.0.1:5672//)
AGENTIC_CACHE_EVENTS                         on/off: event-driven invalidation (on)
AGENTIC_CACHE_EVENTS_EXCHANGE                topic exchange (agentic.events)
AGENTIC_CACHE_EVENTS_QUEUE                   durable queue (unset: derived from the
                                             node set, agentic.cache.invalidations.<hash>)
AGENTIC_MEMCACHED_CONNECT_TIMEOUT_SECONDS    per connect (0.05)
AGENTIC_MEMCACHED_TIMEOUT_SECONDS            per read/write (0.1)
AGENTIC_MEMCACHED_IO_THREADS                 threads doing Memcached I/O (8)
AGENTIC_CACHE_BREAKER_FAILURE_THRESHOLD      consecutive failures that open a node's
                                             breaker (3)
AGENTIC_CACHE_BREAKER_RESET_SECONDS          open time before a recovery trial (1.0)
AGENTIC_CACHE_SHUTDOWN_GRACE_SECONDS         grace for in-flight RPCs on SIGTERM (5.0)
AGENTIC_READY_FILE                           if set, JSON {"grpc_port", "metrics_port"}
                                             is written here once serving (unset);
                                             metrics_port is null when metrics are off
AGENTIC_CACHE_TLS_CERT_FILE                  PEM certificate chain: serve TLS (unset:
                                             plaintext); needs the key file
AGENTIC_CACHE_TLS_KEY_FILE                   PEM private key of that certificate (unset)
AGENTIC_CACHE_TLS_CLIENT_CA_FILE             PEM CA(s): require client certificates
                                             issued by them, mTLS (unset: no client
                                             certificate asked); needs cert and key
===========================================  =========================================

Nothing else in the package reads the environment: the Config is passed down.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

__all__ = ["DEFAULT_POLICY_FILE", "EVENTS_QUEUE_PREFIX", "Config", "ConfigError", "node_set_queue"]

DEFAULT_POLICY_FILE = Path(__file__).with_name("namespaces.toml")
"""The policy shipped with the package."""

EVENTS_QUEUE_PREFIX = "agentic.cache.invalidations."
"""Start of every derived event queue name; a hash of the node set follows."""

_T = TypeVar("_T")


class ConfigError(ValueError):
    """An environment variable has a value the sidecar cannot use; names the variable."""


@dataclass(frozen=True)
class Config:
    """Everything the sidecar process needs to start, with units in the names."""

    listen_address: str = "127.0.0.1:50052"
    """gRPC listen address; port 0 picks a free port (create_server returns it)."""
    memcached_servers: tuple[str, ...] = ("127.0.0.1:11211",)
    """Memcached nodes (host:port); keys are spread by rendezvous hashing."""
    policy_file: Path = field(default=DEFAULT_POLICY_FILE)
    """Namespace policy TOML; a bad file stops the start with a clear message."""
    metrics_port: int | None = 9465
    """Prometheus exposition port on 127.0.0.1; 0 picks a free port, None disables metrics."""
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    """Broker carrying domain events."""
    events_enabled: bool = True
    """Whether to consume domain events for invalidation."""
    events_exchange: str = "agentic.events"
    """Durable topic exchange the domain events are published to."""
    events_queue: str = ""
    """Durable queue set explicitly; empty consumes :attr:`node_set_queue` (the normal case)."""
    memcached_connect_timeout_seconds: float = 0.05
    """Connect timeout of every Memcached connection."""
    memcached_timeout_seconds: float = 0.1
    """Read/write timeout of every Memcached call."""
    memcached_io_threads: int = 8
    """Size of the thread pool that runs blocking Memcached calls."""
    breaker_failure_threshold: int = 3
    """Consecutive failures that open a node's circuit breaker (and quarantine it)."""
    breaker_reset_seconds: float = 1.0
    """Time a breaker stays open before a recovery trial (a flush)."""
    shutdown_grace_seconds: float = 5.0
    """On SIGTERM, time in-flight RPCs get before they are cancelled."""
    ready_file: str = ""
    """If set, the bound ports are written here as JSON once serving (supervisors, tests)."""
    tls_cert_file: str = ""
    """PEM certificate chain the gRPC port presents; empty serves plaintext."""
    tls_key_file: str = ""
    """PEM private key of ``tls_cert_file``; set together with it."""
    tls_client_ca_file: str = ""
    """PEM CA certificates; when set, clients must present a certificate they issued (mTLS)."""

    @property
    def node_set_queue(self) -> str:
        """The event queue derived from ``memcached_servers`` (see :func:`node_set_queue`)."""
        return node_set_queue(self.memcached_servers)

    @property
    def consumed_queue(self) -> str:
        """The durable queue this sidecar consumes: the explicit one, else the derived one.

        Sidecars on one queue are competing consumers: each event is applied by one of them.
        """
        return self.events_queue or self.node_set_queue

    @property
    def queue_mismatch(self) -> str | None:
        """A warning when an explicit queue is not the one derived for these nodes, else None."""
        if not self.events_queue or self.events_queue == self.node_set_queue:
            return None
        return (
            f"AGENTIC_CACHE_EVENTS_QUEUE={self.events_queue!r} is not the queue derived for "
            f"memcached {','.join(self.memcached_servers)} ({self.node_set_queue!r}): "
            "sidecars sharing a queue each apply only some of the events, which is right only "
            "if they all use exactly the same Memcached nodes"
        )

    @property
    def tls_enabled(self) -> bool:
        """Whether the gRPC port serves TLS (validation guarantees cert and key together)."""
        return bool(self.tls_cert_file)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build a Config from AGENTIC_* variables; raise ConfigError naming a bad one."""
        env = os.environ if environ is None else environ
        d = cls()

        def get(name: str, parse: Callable[[str], _T], default: _T) -> _T:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                return parse(raw.strip())
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r}: {exc}") from None

        def off_or_get(name: str, parse: Callable[[str], _T], default: _T | None) -> _T | None:
            # Set but empty turns the feature off (as AGENTIC_METRICS_ADDRESS does for the
            # server), so 0 can stay a port number that picks a free port.
            raw = env.get(name)
            if raw is not None and raw.strip() == "":
                return None
            return get(name, parse, default)

        tls_cert_file = get("AGENTIC_CACHE_TLS_CERT_FILE", str, d.tls_cert_file)
        tls_key_file = get("AGENTIC_CACHE_TLS_KEY_FILE", str, d.tls_key_file)
        tls_client_ca_file = get("AGENTIC_CACHE_TLS_CLIENT_CA_FILE", str, d.tls_client_ca_file)
        _check_tls(tls_cert_file, tls_key_file, tls_client_ca_file)
        return cls(
            listen_address=get("AGENTIC_CACHE_LISTEN_ADDRESS", _address, d.listen_address),
            memcached_servers=get("AGENTIC_MEMCACHED_SERVERS", _servers, d.memcached_servers),
            policy_file=get("AGENTIC_CACHE_POLICY_FILE", Path, d.policy_file),
            metrics_port=off_or_get("AGENTIC_CACHE_METRICS_PORT", _port, d.metrics_port),
            amqp_url=get("AGENTIC_AMQP_URL", str, d.amqp_url),
            events_enabled=get("AGENTIC_CACHE_EVENTS", _switch, d.events_enabled),
            events_exchange=get("AGENTIC_CACHE_EVENTS_EXCHANGE", str, d.events_exchange),
            events_queue=get("AGENTIC_CACHE_EVENTS_QUEUE", str, d.events_queue),
            memcached_connect_timeout_seconds=get(
                "AGENTIC_MEMCACHED_CONNECT_TIMEOUT_SECONDS",
                _seconds,
                d.memcached_connect_timeout_seconds,
            ),
            memcached_timeout_seconds=get(
                "AGENTIC_MEMCACHED_TIMEOUT_SECONDS", _seconds, d.memcached_timeout_seconds
            ),
            memcached_io_threads=get(
                "AGENTIC_MEMCACHED_IO_THREADS", _positive_int, d.memcached_io_threads
            ),
            breaker_failure_threshold=get(
                "AGENTIC_CACHE_BREAKER_FAILURE_THRESHOLD",
                _positive_int,
                d.breaker_failure_threshold,
            ),
            breaker_reset_seconds=get(
                "AGENTIC_CACHE_BREAKER_RESET_SECONDS", _seconds, d.breaker_reset_seconds
            ),
            shutdown_grace_seconds=get(
                "AGENTIC_CACHE_SHUTDOWN_GRACE_SECONDS", _seconds, d.shutdown_grace_seconds
            ),
            ready_file=get("AGENTIC_READY_FILE", str, d.ready_file),
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            tls_client_ca_file=tls_client_ca_file,
        )


def node_set_queue(servers: Iterable[str]) -> str:
    """The event queue of a Memcached node set: ``agentic.cache.invalidations.<12 hex>``.

    The hash is of the sorted, de-duplicated ``host:port`` strings, so the order of the
    list does not matter. Sidecars on one node set compete for one queue (each event is
    applied once, to the nodes they share); a sidecar on other nodes gets its own queue
    bound to the same exchange, so every node set sees every event.
    """
    # Deliberately no further normalisation (lower-casing, DNS): keys are placed by
    # rendezvous hashing of these exact strings, so only lists with the same strings put a
    # key on the same node, and only such sidecars may share the work of invalidating it.
    canonical = ",".join(sorted({server.strip() for server in servers}))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return EVENTS_QUEUE_PREFIX + digest[:12]


def _check_tls(cert_file: str, key_file: str, client_ca_file: str) -> None:
    # Half a TLS configuration must not fall back to plaintext silently.
    if cert_file and not key_file:
        raise ConfigError(
            "AGENTIC_CACHE_TLS_KEY_FILE is required when AGENTIC_CACHE_TLS_CERT_FILE is set"
        )
    if key_file and not cert_file:
        raise ConfigError(
            "AGENTIC_CACHE_TLS_CERT_FILE is required when AGENTIC_CACHE_TLS_KEY_FILE is set"
        )
    if client_ca_file and not cert_file:
        raise ConfigError(
            "AGENTIC_CACHE_TLS_CLIENT_CA_FILE needs AGENTIC_CACHE_TLS_CERT_FILE and "
            "AGENTIC_CACHE_TLS_KEY_FILE: client certificates are checked only over TLS"
        )


def _address(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("must be host:port")
    return raw


def _servers(raw: str) -> tuple[str, ...]:
    servers = tuple(_address(part.strip()) for part in raw.split(",") if part.strip())
    if not servers:
        raise ValueError("must list at least one host:port")
    return servers


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return port


def _switch(raw: str) -> bool:
    value = raw.lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ValueError("must be on or off")


def _seconds(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value
