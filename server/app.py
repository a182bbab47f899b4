"""Build the API server (``create_server``) apart from running it (``serve``)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from agentic.admin.v1 import admin_pb2, admin_pb2_grpc
from agentic.artifacts.v1 import artifacts_pb2, artifacts_pb2_grpc
from agentic.compliance.v1 import rule_sets_pb2, rule_sets_pb2_grpc
from agentic.projects.v1 import projects_pb2, projects_pb2_grpc
from agentic.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from agentic.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from google.longrunning import (  # type: ignore[import-untyped]  # .pyi stubs, no py.typed marker
    operations_pb2_grpc,
    operations_proto_pb2,
)
from grpc_health.v1 import health, health_pb2_grpc
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from core.audit import AuditWriter
from core.cache import CacheClient
from core.db import install_statement_deadlines, make_engine, migrate
from core.events import AmqpPublisher, EventRelay, NullPublisher, Publisher
from core.objects import ObjectStore, ObjectStoreError, open_store
from core.rpc import ServiceInterceptor, enable_reflection
from core.serving import Dependency, DependencyHealth, start_metrics, wait_for_stop_signal
from core.tasks import dead_letter_queue
from core.tls import configured_channel_credentials, server_credentials
from server._config import ServerConfig
from server.access import (
    AccessControl,
    ConcurrencyLimit,
    RateLimiter,
    StreamSlots,
    deadline_remaining,
)
from server.admin import Admin, AdminService
from server.artifacts import ArtifactLimits, Artifacts, ArtifactService, ArtifactStore
from server.auth import JwksKeySet, Role, TokenVerifier
from server.caching import CoherentCache
from server.compliance import RuleSets, RuleSetService, RuleSetStore
from server.operations import OperationsService
from server.projects import Projects, ProjectService, ProjectStore
from server.sessions import (
    ActivityTracker,
    RevocationList,
    RevocationStore,
    SessionGuard,
    Sessions,
    SessionsCollector,
    SessionService,
)
from server.tasks import Tasks, TaskService
from server.tasks._metrics import TaskCollector
from server.tasks._ops_metrics import BrokerFigures, JobTimes, last_outcomes

log = logging.getLogger("server")

SERVICE_NAMES = (
    projects_pb2.DESCRIPTOR.services_by_name["ProjectService"].full_name,
    artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
    tasks_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    rule_sets_pb2.DESCRIPTOR.services_by_name["RuleSetService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    sessions_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    operations_proto_pb2.DESCRIPTOR.services_by_name["Operations"].full_name,
)


@dataclass
class App:
    """A built, not yet started, server and what it owns."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    executor: ThreadPoolExecutor
    io_executor: ThreadPoolExecutor
    projects: Projects
    artifacts: Artifacts
    objects: ObjectStore
    cache: CacheClient | None
    publisher: Publisher
    tasks: Tasks
    engine: Engine
    dependencies: DependencyHealth
    keys: JwksKeySet | None
    sessions: Sessions

    async def close(self) -> None:
        """Release what the server owns, after it stopped."""
        await self.sessions.stop()
        await self.projects.close()
        await self.tasks.close()
        if self.cache is not None:
            await self.cache.close()
        self.publisher.close()
        self.executor.shutdown(wait=True)
        self.io_executor.shutdown(wait=True)
        self.engine.dispose()

    async def set_serving(self, serving: bool) -> None:
        """Start reporting health from the dependency checks, or NOT_SERVING for good."""
        if serving:
            await self.dependencies.start()
        else:
            await self.dependencies.stop_serving()


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """Channel arguments: message size limits and keepalive policy."""
    return [
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
        ("grpc.max_send_message_length", config.max_send_message_bytes),
        ("grpc.keepalive_time_ms", config.keepalive_time_seconds * 1000),
        ("grpc.keepalive_timeout_ms", config.keepalive_timeout_seconds * 1000),
        # Let clients keep idle connections alive with pings, but not flood us with them.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # A fleet of watchers reconnecting at once arrives faster than the loop picks calls
        # up; past this gRPC cancels them (measured: 5,000 reconnects need it above 3,000).
        ("grpc.server.max_pending_requests", config.max_pending_requests),
        ("grpc.server.max_pending_requests_hard_limit", config.max_pending_requests),
    ]


def jwks(config: ServerConfig) -> JwksKeySet | None:
    """The token-signing keys (None when authentication is off).

    A JWKS that cannot be read stops the start with JwksError: a server that could verify
    nobody must not look healthy.
    """
    if not config.auth_enabled:
        return None
    return JwksKeySet.load(
        config.auth_jwks, min_refresh_interval_seconds=config.auth_jwks_refresh_seconds
    )


def access_control(
    config: ServerConfig, keys: JwksKeySet | None, sessions: SessionGuard | None = None
) -> AccessControl:
    """Authentication (an RS256 verifier over ``keys``, unless switched off), the session
    check of every call, and call limits."""
    verifier = None
    if keys is not None:
        verifier = TokenVerifier(
            keys,
            issuer=config.auth_issuer,
            audience=config.auth_audience,
            leeway_seconds=config.auth_leeway_seconds,
        )
    return AccessControl(
        verifier,
        leeway_seconds=config.auth_leeway_seconds,
        token_cache_seconds=config.auth_token_cache_seconds,
        concurrency=ConcurrencyLimit(config.max_concurrent_rpcs),
        sessions=sessions,
    )


async def refresh_keys_forever(keys: JwksKeySet, every_seconds: float) -> None:
    """Re-read the JWKS every ``every_seconds``: a key dropped from it stops being trusted
    even if no token ever names an unknown kid (a failed read keeps the keys it had)."""
    while True:
        await asyncio.sleep(every_seconds)
        try:
            await keys.refresh()
        except Exception:  # refresh() keeps the cached keys; never let the loop die
            log.warning("periodic JWKS refresh failed", exc_info=True)


def _cache_client(config: ServerConfig) -> CacheClient | None:
    if not config.cache_address:
        return None
    credentials = configured_channel_credentials(
        config.cache_server_ca_file, config.cache_client_cert_file, config.cache_client_key_file
    )
    return CacheClient.connect(
        config.cache_address,
        timeout_seconds=config.cache_timeout_seconds,
        invalidate_timeout_seconds=config.cache_invalidate_timeout_seconds,
        credentials=credentials,
        server_name=config.cache_server_name,
        caller_deadline=deadline_remaining,
    )


def _sessions(
    config: ServerConfig,
    engine: Engine,
    executor: ThreadPoolExecutor,
    cache: CacheClient | None,
    relay: EventRelay,
) -> tuple[Sessions, SessionGuard]:
    """Revocations (loaded now: a revoked token is refused from the first call) and the
    session check; idle tracking needs the cache sidecar."""
    tracker = None
    if cache is not None and config.session_idle_tracking:
        tracker = ActivityTracker(
            cache,
            idle_seconds=config.session_idle_seconds,
            touch_interval_seconds=config.session_touch_interval_seconds,
        )
    revocations = RevocationList()
    sessions = Sessions(
        RevocationStore(engine),
        executor,
        relay=relay,
        audit=AuditWriter(engine),
        revocations=revocations,
        tracker=tracker,
        retain_seconds=config.session_revocation_retain_seconds,
        poll_seconds=config.session_revocation_poll_seconds,
        leeway_seconds=config.auth_leeway_seconds,
    )
    sessions.load()
    guard = SessionGuard(
        revocations,
        tracker=tracker,
        max_age_seconds=config.session_max_age_seconds,
        sessionless_subjects=config.sessionless_subjects,
        sessionless_roles=[Role(role) for role in config.sessionless_roles],
    )
    return sessions, guard


def _bind(server: grpc.aio.Server, config: ServerConfig) -> int:
    if config.tls_cert_file:
        credentials = server_credentials(
            config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file or None
        )
        return int(server.add_secure_port(config.listen_address, credentials))
    return int(server.add_insecure_port(config.listen_address))


async def _database_answers(engine: Engine, executor: ThreadPoolExecutor) -> bool:
    def ping() -> bool:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        return True

    return await asyncio.get_running_loop().run_in_executor(executor, ping)


async def _object_store_answers(objects: ObjectStore, executor: ThreadPoolExecutor) -> bool:
    try:
        await asyncio.get_running_loop().run_in_executor(executor, objects.check)
    except ObjectStoreError:
        log.warning("object store check failed", exc_info=True)
        return False
    return True


def _artifacts(
    config: ServerConfig,
    engine: Engine,
    executor: ThreadPoolExecutor,
    io_executor: ThreadPoolExecutor,
    objects: ObjectStore,
    cache: CoherentCache,
    relay: EventRelay,
    projects: Projects,
) -> Artifacts:
    limits = ArtifactLimits(
        max_bytes=config.artifact_max_bytes,
        quota_bytes=config.project_quota_bytes,
        lease_seconds=config.upload_writer_lease_seconds,
        max_open_uploads=config.max_open_uploads,
        expire_seconds=config.upload_expire_seconds,
    )
    return Artifacts(
        ArtifactStore(engine),
        objects,
        db=executor,
        io=io_executor,
        cache=cache,
        relay=relay,
        limits=limits,
        project_reach=projects.reaches,
    )


def create_server(config: ServerConfig) -> App:
    """Wire storage, servicers, health and reflection onto a bound, unstarted server."""
    engine = make_engine(config.database_url, pool_size=config.db_pool_size)
    if config.db_auto_migrate:
        migrate(engine)
    install_statement_deadlines(engine)  # after migrating: DDL runs without a deadline
    executor = ThreadPoolExecutor(config.db_pool_size, thread_name_prefix="db")
    keys = jwks(config)
    cache = _cache_client(config)
    publisher: Publisher = (
        AmqpPublisher(config.events_broker_url, config.events_exchange)
        if config.events_broker_url
        else NullPublisher()
    )
    # One coherent cache (one pending-invalidations set) and one relay for every resource.
    coherent = CoherentCache(cache, origin_concurrency=config.origin_concurrency)
    relay = EventRelay(
        engine, executor, publisher, interval_seconds=config.event_relay_interval_seconds
    )
    projects = Projects(ProjectStore(engine), executor, cache=coherent, relay=relay)
    io_executor = ThreadPoolExecutor(config.object_io_threads, thread_name_prefix="objects")
    objects = open_store(config.object_store_url, part_bytes=config.object_store_part_bytes)
    artifacts = _artifacts(
        config, engine, executor, io_executor, objects, coherent, relay, projects
    )
    tasks = Tasks.from_config(engine, executor, config)
    sessions, guard = _sessions(config, engine, executor, cache, relay)
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(gate=access_control(config, keys, guard))],
        options=server_options(config),
    )
    projects_pb2_grpc.add_ProjectServiceServicer_to_server(ProjectService(projects), server)
    # The stubs declare every Submit<Name> abstract; TaskService gets them from the protos
    # at import (server.tasks._kinds), which mypy, reading only the class body, cannot see.
    task_service = TaskService(  # type: ignore[abstract]
        tasks,
        submits=RateLimiter(config.submit_rate_per_second, config.submit_burst, what="submit"),
        watches=StreamSlots(config.max_watch_streams_per_principal, what="WatchTask"),
        project_reach=projects.reaches,
        artifact_ref=artifacts.reference,
    )
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(task_service, server)
    # Every task is also a google.longrunning operation, served through task_service.
    operations_pb2_grpc.add_OperationsServicer_to_server(OperationsService(task_service), server)
    artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(ArtifactService(artifacts), server)
    rule_sets = RuleSets(RuleSetStore(engine), executor, cache=coherent, relay=relay)
    rule_sets_pb2_grpc.add_RuleSetServiceServicer_to_server(RuleSetService(rule_sets), server)
    admin = Admin(
        engine,
        executor,
        cache=cache,
        submit=task_service.submit_kind,
        broker_url=config.tasks_broker_url,
        queues=(config.task_queue, dead_letter_queue(config.task_queue).name),
        backups=config.backup,
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminService(admin), server)
    sessions_pb2_grpc.add_SessionServiceServicer_to_server(SessionService(sessions), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, (*SERVICE_NAMES, health.SERVICE_NAME))
    port = _bind(server, config)
    if port == 0:
        raise RuntimeError(f"could not bind {config.listen_address}")
    # Without the database nothing can be served. Without the broker Submit keeps
    # accepting tasks into the outbox and WatchTask keeps polling the database; work
    # resumes by itself when the broker is back, so it is reported but not required.
    checks = [
        Dependency("database", lambda: _database_answers(engine, executor)),
        # Without the object store only artifact bytes are out of reach: reported, not required.
        Dependency(
            "object_store",
            lambda: _object_store_answers(objects, io_executor),
            required=False,
        ),
    ]
    if config.broker_url:
        checks.append(Dependency("broker", tasks.broker_connected, required=False))
    dependencies = DependencyHealth(health_servicer, SERVICE_NAMES, checks)
    return App(
        server=server,
        port=port,
        health=health_servicer,
        executor=executor,
        io_executor=io_executor,
        projects=projects,
        artifacts=artifacts,
        objects=objects,
        cache=cache,
        publisher=publisher,
        tasks=tasks,
        engine=engine,
        dependencies=dependencies,
        keys=keys,
        sessions=sessions,
    )


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM/SIGINT: then NOT_SERVING, and stop with the grace period."""
    app = create_server(config)
    # Registered here, not in create_server: one collector per serving process.
    REGISTRY.register(TaskCollector(app.tasks.gauges, app.tasks.hub))
    REGISTRY.register(JobTimes(lambda: last_outcomes(app.engine)))
    tracker = app.sessions.tracker
    REGISTRY.register(
        SessionsCollector(lambda: 0 if tracker is None else tracker.active_sessions())
    )
    figures = None
    if config.tasks_broker_url:  # without a broker there are no queue figures to export
        queue = config.task_queue
        figures = BrokerFigures(config.tasks_broker_url, (queue, dead_letter_queue(queue).name))
        REGISTRY.register(figures)
        figures.start()
    metrics = start_metrics(config.metrics_address)
    metrics_port = None if metrics is None else metrics.port
    await app.server.start()
    # Background work of a serving app: the outbox relays, event notifications, redelivery.
    app.tasks.start()
    app.projects.start()
    app.sessions.start()
    refresher = (
        None
        if app.keys is None
        else asyncio.create_task(
            refresh_keys_forever(app.keys, config.auth_jwks_max_age_seconds), name="jwks"
        )
    )
    await app.set_serving(True)
    host = config.listen_address.rpartition(":")[0]
    log.info("serving gRPC on %s:%d (metrics port %s)", host, app.port, metrics_port)
    await wait_for_stop_signal(
        config.ready_file, {"grpc_port": app.port, "metrics_port": metrics_port}
    )
    log.info("shutting down: NOT_SERVING, grace %.1fs", config.shutdown_grace_seconds)
    # Load balancers watching health stop routing here before connections close.
    await app.set_serving(False)
    if refresher is not None:
        refresher.cancel()
    await app.server.stop(config.shutdown_grace_seconds)
    await app.close()
    if metrics is not None:
        await metrics.close()
    if figures is not None:
        await asyncio.to_thread(figures.close)
    log.info("stopped")
