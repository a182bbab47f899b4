"""Process configuration, read once from the environment at start-up.

Each field of :class:`Config` declares its variable, default and meaning once
(``core.config.setting``); the README's "Cache sidecar" table is rendered from these
declarations (``make docs``). Nothing else in the package reads the environment: the Config
is passed down.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cache_sidecar._socket import MAX_SOCKET_PATH_BYTES
from core.config import (
    Alias,
    ConfigError,
    address,
    address_list,
    boolean,
    integer,
    number,
    path,
    read_env,
    setting,
)

__all__ = [
    "DEFAULT_LISTEN_ADDRESS",
    "DEFAULT_POLICY_FILE",
    "EVENTS_QUEUE_PREFIX",
    "Config",
    "ConfigError",
    "node_set_queue",
    "socket_path",
]

DEFAULT_LISTEN_ADDRESS = "unix:/run/agentic/cache.sock"
"""A private Unix socket (see ``cache_sidecar._socket``): the containers' path."""


DEFAULT_POLICY_FILE = Path(__file__).with_name("namespaces.toml")
"""The policy shipped with the package."""

EVENTS_QUEUE_PREFIX = "agentic.cache.invalidations."
"""Start of every derived event queue name; a hash of the node set follows."""

_POSITIVE_SECONDS = number(positive=True)
_POSITIVE_INT = integer(minimum=1)


def socket_path(listen_address: str) -> str | None:
    """The file of a ``unix:`` address (gRPC's ``unix:path`` and ``unix:///abs/path``),
    None for ``host:port``."""
    if not listen_address.startswith("unix:"):
        return None
    rest = listen_address.removeprefix("unix:")
    return rest.removeprefix("//") if rest.startswith("//") else rest


def _listen_address(raw: str) -> str:
    """``unix:PATH`` (a private socket) or ``host:port``."""
    raw = raw.strip()
    if raw.startswith("unix-abstract:"):
        raise ValueError(
            "abstract sockets have no file permissions (any local process could connect); "
            "use unix:PATH"
        )
    path = socket_path(raw)
    if path is None:
        return address(raw)
    if not path or (raw.startswith("unix://") and not path.startswith("/")):
        raise ValueError("must be unix:PATH (unix:/run/agentic/cache.sock) or host:port")
    if len(os.fsencode(os.path.abspath(path))) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(f"socket path longer than {MAX_SOCKET_PATH_BYTES} bytes")
    return raw


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: it could resolve to anything
        return False


def _metrics_port_as_address(raw: str) -> str:
    # The former variable was a port on 127.0.0.1 (empty: off); say it as host:port.
    return f"127.0.0.1:{raw.strip()}" if raw.strip() else ""


@dataclass(frozen=True)
class Config:
    """Everything the sidecar process needs to start, with units in the names."""

    listen_address: str = setting(
        "AGENTIC_CACHE_LISTEN_ADDRESS",
        DEFAULT_LISTEN_ADDRESS,
        parse=_listen_address,
        doc="where the gRPC service listens. `unix:PATH`: a Unix socket in a directory only "
        "the sidecar's user may open (created with mode 0700 when missing; one open to "
        "group or others, or owned by another user, stops the sidecar; a dead "
        "predecessor's socket is replaced, a live one never). `host:port` (port 0 picks a "
        "free port): TCP, which needs mTLS (the three `AGENTIC_CACHE_TLS_*` files), or "
        "`AGENTIC_CACHE_INSECURE_LOOPBACK_TCP` on a loopback address",
    )
    insecure_loopback_tcp: bool = setting(
        "AGENTIC_CACHE_INSECURE_LOOPBACK_TCP",
        False,
        parse=boolean,
        shown="`off`",
        doc="accept a TCP listen address without client certificates, on 127.0.0.1 or ::1 "
        "only, with a warning at start: any local process can then read and fill the "
        "cache. For tests and benchmarks, never a deployment",
    )
    memcached_servers: tuple[str, ...] = setting(
        "AGENTIC_MEMCACHED_SERVERS",
        ("127.0.0.1:11211",),
        parse=address_list,
        doc="comma-separated `host:port` list; keys are spread by rendezvous hashing",
    )
    # setting() returns a dataclasses.field, as field() does; Path merely is not on ruff's list
    # of immutable types.
    policy_file: Path = setting(  # noqa: RUF009
        "AGENTIC_CACHE_POLICY_FILE",
        DEFAULT_POLICY_FILE,
        parse=path,
        shown="`cache_sidecar/namespaces.toml`",
        doc="the namespace policy (see [The cache](#the-cache)); a bad file stops the sidecar "
        "with a message naming namespace and field",
    )
    metrics_address: str = setting(
        "AGENTIC_CACHE_METRICS_ADDRESS",
        "127.0.0.1:9465",
        parse=address,
        when_empty="",
        aliases=(
            Alias(
                "AGENTIC_CACHE_METRICS_PORT",
                convert=_metrics_port_as_address,
                doc="a port on 127.0.0.1",
            ),
        ),
        doc="host:port of the Prometheus `/metrics` endpoint; port 0 picks a free port "
        "(reported in the ready file); set but empty disables it",
    )
    broker_url: str = setting(
        "AGENTIC_BROKER_URL",
        "amqp://guest:guest@127.0.0.1:5672//",
        when_empty="",
        aliases=(Alias("AGENTIC_AMQP_URL", convert=lambda raw: raw.strip() or None),),
        doc="the broker whose domain events the sidecar consumes (the same variable as the "
        "server's and the workers'); set but empty: no event consumer",
    )
    events_enabled: bool = setting(
        "AGENTIC_CACHE_EVENTS",
        True,
        parse=boolean,
        shown="`on`",
        doc="event-driven invalidation on/off",
    )
    events_exchange: str = setting(
        "AGENTIC_CACHE_EVENTS_EXCHANGE",
        "agentic.events",
        doc="durable topic exchange the domain events arrive on",
    )
    events_queue: str = setting(
        "AGENTIC_CACHE_EVENTS_QUEUE",
        "",
        shown="(unset: `agentic.cache.invalidations.<hash of the node list>`)",
        doc="durable queue the sidecar consumes. Leave it unset: the derived name is shared "
        "exactly by the sidecars on the same Memcached nodes (see [The cache](#the-cache)); "
        "an explicit name wins, with a warning at start when it is not the derived one",
    )
    memcached_connect_timeout_seconds: float = setting(
        "AGENTIC_MEMCACHED_CONNECT_TIMEOUT_SECONDS",
        0.05,
        parse=_POSITIVE_SECONDS,
        doc="connect timeout of every Memcached connection",
    )
    memcached_timeout_seconds: float = setting(
        "AGENTIC_MEMCACHED_TIMEOUT_SECONDS",
        0.1,
        parse=_POSITIVE_SECONDS,
        doc="read/write timeout of every Memcached call",
    )
    memcached_io_threads: int = setting(
        "AGENTIC_MEMCACHED_IO_THREADS",
        8,
        parse=_POSITIVE_INT,
        doc="threads doing Memcached I/O (pymemcache is blocking; the event loop never is)",
    )
    breaker_failure_threshold: int = setting(
        "AGENTIC_CACHE_BREAKER_FAILURE_THRESHOLD",
        3,
        parse=_POSITIVE_INT,
        doc="consecutive failures that open a node's circuit breaker (and quarantine it)",
    )
    breaker_reset_seconds: float = setting(
        "AGENTIC_CACHE_BREAKER_RESET_SECONDS",
        1.0,
        parse=_POSITIVE_SECONDS,
        doc="how long a breaker stays open before a recovery trial (a flush)",
    )
    shutdown_grace_seconds: float = setting(
        "AGENTIC_CACHE_SHUTDOWN_GRACE_SECONDS",
        5.0,
        parse=_POSITIVE_SECONDS,
        doc="on SIGTERM, time in-flight RPCs get before they are cancelled",
    )
    ready_file: str = setting(
        "AGENTIC_READY_FILE",
        "",
        doc='as for the server, written once serving: `{"grpc_address": …, "grpc_port": …, '
        '"metrics_port": …}`, the address served (`unix:` and the absolute socket path, or '
        "`host:port` with the port bound) and the ports actually bound (`grpc_port` is "
        "`null` on a Unix socket, `metrics_port` when metrics are off)",
    )
    tls_cert_file: str = setting(
        "AGENTIC_CACHE_TLS_CERT_FILE",
        "",
        doc="PEM certificate (chain) the sidecar serves TLS with; unset: plaintext. Needs "
        "the key file",
    )
    tls_key_file: str = setting(
        "AGENTIC_CACHE_TLS_KEY_FILE",
        "",
        doc="PEM private key of that certificate (unencrypted)",
    )
    tls_client_ca_file: str = setting(
        "AGENTIC_CACHE_TLS_CLIENT_CA_FILE",
        "",
        doc="clients must present a certificate issued by this CA (mTLS); needs cert and key",
    )

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
    def consumes_events(self) -> bool:
        """Whether to run the event consumer: events on and a broker configured."""
        return self.events_enabled and bool(self.broker_url)

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

    @property
    def socket_path(self) -> Path | None:
        """The Unix socket listened on (absolute), None on TCP."""
        path = socket_path(self.listen_address)
        return None if path is None else Path(os.path.abspath(path))

    @property
    def transport_warning(self) -> str | None:
        """A warning when the sidecar serves clients it does not authenticate, else None."""
        if self.socket_path is not None or self.tls_client_ca_file:
            return None
        return (
            f"AGENTIC_CACHE_INSECURE_LOOPBACK_TCP: serving TCP on {self.listen_address} "
            "without client certificates: any local process can read and fill the cache "
            "(tests and benchmarks only; deployments use the unix: socket or mTLS)"
        )

    def check(self) -> None:
        """Raise ConfigError for a TLS configuration that is half there, or a transport
        that would let unauthenticated clients fill the cache (see ``listen_address``)."""
        _check_tls(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)
        if self.socket_path is not None or self.tls_client_ca_file:
            return  # the file system or a client certificate decides who may call
        host = self.listen_address.rpartition(":")[0]
        if not _is_loopback(host):
            raise ConfigError(
                f"AGENTIC_CACHE_LISTEN_ADDRESS={self.listen_address!r}: TCP beyond loopback "
                "needs mTLS (AGENTIC_CACHE_TLS_CERT_FILE, AGENTIC_CACHE_TLS_KEY_FILE and "
                "AGENTIC_CACHE_TLS_CLIENT_CA_FILE), else any host reaching the port could "
                "fill the cache; or listen on a unix: socket (the default)"
            )
        if not self.insecure_loopback_tcp:
            raise ConfigError(
                f"AGENTIC_CACHE_LISTEN_ADDRESS={self.listen_address!r} is TCP without client "
                "certificates: any local process could read and fill the cache. Listen on a "
                "unix: socket (the default), configure mTLS, or set "
                "AGENTIC_CACHE_INSECURE_LOOPBACK_TCP=true to accept it on loopback (tests)"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build a Config from AGENTIC_* variables; raise ConfigError naming a bad one."""
        config = read_env(cls, environ)
        config.check()
        return config


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
