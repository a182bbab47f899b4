"""Process wiring: create_server() builds everything, serve() runs it until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc
from grpc_health.v1 import health, health_pb2_grpc

from cache_sidecar._breaker import BreakerSettings
from cache_sidecar._config import Config
from cache_sidecar._events import EventApplier, EventConsumer
from cache_sidecar._leases import ReadCache
from cache_sidecar._metrics import Counters, Metrics, SidecarCollector
from cache_sidecar._policy import check_against_contract, load_policy
from cache_sidecar._service import CacheServicer
from cache_sidecar._socket import SocketClaim, claim_socket
from cache_sidecar._store import Store
from core.rpc import ServiceInterceptor, enable_reflection
from core.serving import (
    Dependency,
    DependencyHealth,
    MetricsEndpoint,
    start_metrics,
    wait_for_stop_signal,
)
from core.tls import server_credentials

__all__ = ["SERVICE_NAME", "CacheSidecar", "create_server", "serve"]

SERVICE_NAME: str = cache_pb2.DESCRIPTOR.services_by_name["CacheService"].full_name
"""Fully qualified gRPC service name, also the health-check service name."""

_log = logging.getLogger(__name__)

# Recovery and health checks run on this tick: a quarantined node that came back is
# flushed and serving again within a tick or two after its breaker allows a trial.
_MAINTENANCE_TICK_SECONDS = 0.05


class CacheSidecar:
    """A built sidecar: the gRPC server plus its background parts, started together."""

    def __init__(
        self,
        *,
        config: Config,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        dependencies: DependencyHealth,
        cache: ReadCache,
        store: Store,
        executor: ThreadPoolExecutor,
        metrics: Metrics,
        consumer: EventConsumer | None,
        address: str,
        claim: SocketClaim | None = None,
    ) -> None:
        self.config = config
        self.address = address
        """The address served: ``unix:`` and the absolute socket path, or ``host:port``
        with the port bound (the free one picked for port 0)."""
        self._claim = claim
        self.server = server
        self.health = health_servicer
        self.dependencies = dependencies
        self.cache = cache
        self.store = store
        self.metrics = metrics
        self._executor = executor
        self._consumer = consumer
        self._maintenance: asyncio.Task[None] | None = None
        self._metrics: MetricsEndpoint | None = None
        self.metrics_port: int | None = None
        """Bound Prometheus port after start() (the free one picked for port 0), None when off."""

    async def start(self) -> None:
        """Start serving RPCs, recovery/health upkeep, the event consumer and metrics."""
        await self.server.start()
        if self.config.transport_warning is not None:
            _log.warning("%s", self.config.transport_warning)
        loop = asyncio.get_running_loop()
        for warning in await loop.run_in_executor(self._executor, self.store.unsafe_settings):
            _log.warning("%s", warning)
        if self._consumer is not None and self.config.queue_mismatch is not None:
            _log.warning("%s", self.config.queue_mismatch)
        await self.dependencies.start()
        self._maintenance = asyncio.create_task(self._maintain(), name="cache-maintenance")
        if self._consumer is not None:
            self._consumer.start()
        self._metrics = start_metrics(self.config.metrics_address, self.metrics.registry)
        self.metrics_port = None if self._metrics is None else self._metrics.port

    async def stop(self, grace_seconds: float | None) -> None:
        """Report NOT_SERVING, let in-flight RPCs finish within the grace, stop the rest."""
        await self.dependencies.stop_serving()
        await self.server.stop(grace_seconds)
        if self._claim is not None:
            self._claim.release()  # gRPC has removed the socket file
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
        await self.cache.close()
        if self._consumer is not None:
            await asyncio.to_thread(self._consumer.stop)
        if self._metrics is not None:
            await self._metrics.close()
        # In-flight Memcached calls are bounded by their timeouts.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self.store.close()

    async def wait_for_termination(self) -> None:
        """Wait until the gRPC server has stopped."""
        await self.server.wait_for_termination()

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_MAINTENANCE_TICK_SECONDS)
            try:
                if self.store.needs_recovery():
                    await loop.run_in_executor(self._executor, self.store.recover)
            except Exception:
                _log.exception("memcached recovery failed")


def create_server(config: Config) -> tuple[CacheSidecar, int]:
    """Build a sidecar listening on ``config.listen_address``; return it and its port
    (0 on a Unix socket; ``sidecar.address`` says what is served either way).

    A ``unix:`` address is claimed first (``cache_sidecar._socket``: private directory,
    lock, stale socket replaced, live one refused). Serves TLS when ``config.tls_enabled``,
    and requires client certificates (mTLS) when ``config.tls_client_ca_file`` is set;
    plaintext otherwise. Raises ConfigError for a transport ``Config.check`` refuses or a
    socket that cannot be used safely (SocketError), PolicyError when the policy file is
    bad, TlsConfigError when a TLS file is unusable, RuntimeError when the address cannot
    be bound. Nothing runs until ``await sidecar.start()``.
    """
    config.check()
    policy = load_policy(config.policy_file)
    check_against_contract(policy, str(config.policy_file))
    # Read before anything starts threads: a bad certificate path fails fast and clean.
    credentials = (
        server_credentials(
            config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file or None
        )
        if config.tls_enabled
        else None
    )
    store = Store(
        config.memcached_servers,
        key_prefix=policy.key_prefix,
        connect_timeout_seconds=config.memcached_connect_timeout_seconds,
        timeout_seconds=config.memcached_timeout_seconds,
        breaker=BreakerSettings(
            failure_threshold=config.breaker_failure_threshold,
            reset_timeout_seconds=config.breaker_reset_seconds,
        ),
    )
    counters = Counters(policy.namespaces)
    executor = ThreadPoolExecutor(
        max_workers=config.memcached_io_threads, thread_name_prefix="memcached-io"
    )
    cache = ReadCache(policy, store, counters, executor)
    consumer = None
    if config.consumes_events:
        consumer = EventConsumer(
            url=config.broker_url,
            exchange=config.events_exchange,
            queue=config.consumed_queue,
            binding_keys=policy.event_patterns(),
            applier=EventApplier(policy, store, counters),
            counters=counters,
        )

    def events_connected() -> bool:
        return consumer is not None and consumer.connected

    metrics = Metrics(SidecarCollector(counters, store.snapshots, events_connected))

    # The shared interceptor validates requests against the proto rules, maps errors to
    # rich statuses (ErrorInfo domain agentic.cache.v1) and records per-RPC metrics.
    server = grpc.aio.server(interceptors=[ServiceInterceptor()])
    cache_pb2_grpc.add_CacheServiceServicer_to_server(
        CacheServicer(
            cache,
            counters=counters,
            nodes=store.snapshots,
            events_connected=events_connected,
            executor=executor,
        ),
        server,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, (SERVICE_NAME, health.SERVICE_NAME))
    # NOT_SERVING when no Memcached node is usable (Get still answers LOAD_NO_FILL). The
    # events consumer is reported but not required: reads go on, and its queue is durable,
    # so the invalidations it misses meanwhile are applied when it reconnects.
    checks = [Dependency("memcached", store.any_usable)]
    if consumer is not None:
        checks.append(Dependency("events", events_connected, required=False))
    dependencies = DependencyHealth(
        health_servicer, (SERVICE_NAME,), checks, interval_seconds=_MAINTENANCE_TICK_SECONDS
    )
    path = config.socket_path
    claim = None if path is None else claim_socket(path)
    try:
        # An absolute path: the address stays right for clients in another directory.
        listen = config.listen_address if path is None else f"unix:{path}"
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
        if port == 0:  # older grpcio reports a failed bind this way instead of raising
            raise RuntimeError(f"cannot listen on {config.listen_address}")
        if claim is not None:
            claim.secure()
    except BaseException:
        if claim is not None:
            claim.release()
        raise
    if path is None:
        address = f"{config.listen_address.rpartition(':')[0]}:{port}"
    else:
        address, port = f"unix:{path}", 0  # gRPC reports 1 for a socket
    sidecar = CacheSidecar(
        config=config,
        server=server,
        health_servicer=health_servicer,
        dependencies=dependencies,
        cache=cache,
        store=store,
        executor=executor,
        metrics=metrics,
        consumer=consumer,
        address=address,
        claim=claim,
    )
    return sidecar, port


async def serve(config: Config | None = None) -> None:
    """Run a sidecar until SIGTERM or SIGINT, then shut down gracefully.

    Once serving, writes ``{"grpc_address": ..., "grpc_port": ..., "metrics_port": ...}``
    to ``config.ready_file`` when set, for supervisors and tests: the address served
    (``unix:/abs/path`` or ``host:port``) and the ports actually bound (``grpc_port`` is
    null on a Unix socket, ``metrics_port`` when metrics are off), as the API server
    writes its ports.
    """
    config = config or Config.from_env()
    sidecar, port = create_server(config)
    await sidecar.start()
    _log.info(
        "serving %s on %s (metrics port %s), memcached %s, events %s",
        _transport(config),
        sidecar.address,
        sidecar.metrics_port,
        ",".join(config.memcached_servers),
        f"from queue {config.consumed_queue}" if config.events_enabled else "off",
    )
    await wait_for_stop_signal(
        config.ready_file,
        {
            "grpc_address": sidecar.address,
            "grpc_port": port or None,
            "metrics_port": sidecar.metrics_port,
        },
    )
    _log.info("stopping: NOT_SERVING, %.1fs grace", config.shutdown_grace_seconds)
    await sidecar.stop(config.shutdown_grace_seconds)


def _transport(config: Config) -> str:
    security = "plaintext"
    if config.tls_enabled:
        security = "mTLS" if config.tls_client_ca_file else "TLS"
    return f"{security} over a private Unix socket" if config.socket_path else security
