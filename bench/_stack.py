"""Every process the benchmark drives, started on 127.0.0.1 and stopped on exit.

memcached (private, UDP off), the cache sidecar over it twice (on loopback TCP, in the
named insecure mode, and on its default private Unix socket), an API server reading
through each, a second API server with no cache on the same PostgreSQL database, and two
bare chains (``bench._bare``): hop1 -> hop2 with hop2's pymemcache get in a thread
pool (the primary baseline) or on the event loop.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from devtools.memcached import Memcached
from devtools.ports import free_port
from tests._processes import Service, start_service
from tests._support import postgres_database

__all__ = ["Stack", "api_env", "running_stack"]

_START_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Stack:
    """Addresses and handles of the running processes."""

    memcached_port: int
    memcached_pid: int
    memcached_version: str
    database_url: str
    sidecar: Service
    """The sidecar on loopback TCP (the bare chains' transport)."""
    cached_api: Service
    """The API server reading through it."""
    uds_sidecar: Service
    """The sidecar on its default transport, a private Unix socket."""
    uds_cached_api: Service
    """The API server reading through that one."""
    uncached_api: Service
    untracked_api: Service
    """An API server reading through ``sidecar`` like ``cached_api``, with session idle
    tracking off (``AGENTIC_SESSION_IDLE_TRACKING=false``): the baseline of the sessions
    row."""
    bare_thread: Service
    """hop1 of the chain whose hop2 runs pymemcache in a thread pool."""
    bare_thread_hop2: Service
    """That chain's hop2 (called directly: one hop)."""
    bare_loop: Service
    """hop1 of the chain whose hop2 runs pymemcache on its event loop."""
    bare_loop_hop2: Service
    """That chain's hop2."""
    services: tuple[Service, ...]
    """Every started service, for their logs when something fails."""

    def pids(self) -> list[int]:
        """Process ids of every started service (memcached not included)."""
        return [service.process.pid for service in self.services]

    @property
    def cached_metrics_port(self) -> int:
        """Prometheus port of the cached API server."""
        return int(self.cached_api.ready["metrics_port"])

    @property
    def uncached_metrics_port(self) -> int:
        """Prometheus port of the uncached API server."""
        return int(self.uncached_api.ready["metrics_port"])


@contextmanager
def _memcached(log_path: Path) -> Iterator[tuple[int, int, str]]:
    """Start a private memcached; yield (port, pid, version); stop it afterwards."""
    node = Memcached(free_port(), log_path)
    node.start()
    try:
        assert node.pid is not None
        yield node.port, node.pid, node.version
    finally:
        node.stop()


class _Starter:
    """Starts services and registers their stop on an ExitStack, remembering each."""

    def __init__(self, stack: ExitStack, workdir: Path) -> None:
        self._stack = stack
        self._workdir = workdir
        self.started: list[Service] = []

    def __call__(self, module: str, env: Mapping[str, str]) -> Service:
        service = start_service(module, env, self._workdir, timeout=_START_TIMEOUT_SECONDS)
        self._stack.callback(service.stop)
        self.started.append(service)
        return service


def api_env(database_url: str, cache_address: str) -> dict[str, str]:
    """An API server's environment on ``database_url``, reading through ``cache_address``
    (empty: no cache), on loopback ports the ready file reports, events off."""
    return {
        "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
        "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
        "DATABASE_URL": database_url,
        "AGENTIC_CACHE_ADDRESS": cache_address,
        "AGENTIC_EVENTS_ENABLED": "false",
        "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
    }


def _bare_chain(start: _Starter, memcached: str, mode: str) -> tuple[Service, Service]:
    """Start hop2, then hop1 in front of it; return (hop1, hop2)."""
    hop2 = start(
        "bench._bare",
        {"BENCH_ROLE": "hop2", "BENCH_MEMCACHED": memcached, "BENCH_MEMCACHED_MODE": mode},
    )
    hop1 = start("bench._bare", {"BENCH_ROLE": "hop1", "BENCH_UPSTREAM": hop2.address})
    return hop1, hop2


@contextmanager
def running_stack(workdir: Path) -> Iterator[Stack]:
    """Start everything (logs and ready files under ``workdir``); stop it all afterwards."""
    with ExitStack() as stack:
        mc_port, mc_pid, mc_version = stack.enter_context(_memcached(workdir / "memcached.log"))
        memcached = f"127.0.0.1:{mc_port}"
        database_url = stack.enter_context(postgres_database(workdir / "postgres"))
        start = _Starter(stack, workdir)
        sidecar_env = {
            "AGENTIC_MEMCACHED_SERVERS": memcached,
            "AGENTIC_CACHE_METRICS_ADDRESS": "127.0.0.1:0",
            "AGENTIC_CACHE_EVENTS": "off",
            "AGENTIC_CACHE_SHUTDOWN_GRACE_SECONDS": "1",
        }
        sidecar = start(
            "cache_sidecar",
            {
                **sidecar_env,
                "AGENTIC_CACHE_LISTEN_ADDRESS": "127.0.0.1:0",
                "AGENTIC_CACHE_INSECURE_LOOPBACK_TCP": "true",
            },
        )
        # A short path (Linux caps socket paths at 107 bytes); the sidecar makes it 0700.
        socket_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        uds_sidecar = start(
            "cache_sidecar",
            {
                **sidecar_env,
                "AGENTIC_CACHE_LISTEN_ADDRESS": f"unix:{socket_dir / 'run' / 'cache.sock'}",
            },
        )
        # One after the other: each runs the migrations at start-up.
        cached_api = start("server", api_env(database_url, sidecar.address))
        uds_cached_api = start("server", api_env(database_url, uds_sidecar.address))
        uncached_api = start("server", api_env(database_url, ""))
        untracked_api = start(
            "server",
            {**api_env(database_url, sidecar.address), "AGENTIC_SESSION_IDLE_TRACKING": "false"},
        )
        bare_thread, bare_thread_hop2 = _bare_chain(start, memcached, "thread")
        bare_loop, bare_loop_hop2 = _bare_chain(start, memcached, "loop")
        yield Stack(
            memcached_port=mc_port,
            memcached_pid=mc_pid,
            memcached_version=mc_version,
            database_url=database_url,
            sidecar=sidecar,
            cached_api=cached_api,
            uds_sidecar=uds_sidecar,
            uds_cached_api=uds_cached_api,
            uncached_api=uncached_api,
            untracked_api=untracked_api,
            bare_thread=bare_thread,
            bare_thread_hop2=bare_thread_hop2,
            bare_loop=bare_loop,
            bare_loop_hop2=bare_loop_hop2,
            services=tuple(start.started),
        )
