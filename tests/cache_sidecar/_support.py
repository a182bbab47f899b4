"""Real processes for the cache sidecar tests: sidecars over private memcached servers
(``devtools.memcached``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

# Memcached is re-exported (explicitly, for mypy) until every test imports devtools.memcached.
from devtools.memcached import Memcached as Memcached
from tests._support import Service, start_service

T = TypeVar("T")

TEST_POLICY = """
key_prefix = "t"

[defaults]
ttl_seconds = 60
ttl_jitter_fraction = 0.1
negative_ttl_seconds = 30
lease_ttl_seconds = 5
lease_wait_seconds = 2.0
compress_threshold_bytes = 256
max_value_bytes = 262144

[namespaces.projects]
invalidate_keys_on = { "project.*" = "project_id" }

[namespaces.project_lists]
invalidate_namespace_on = ["project.*"]

# Tiny limits: the size cap and lease-wait timeouts without slow tests.
[namespaces.small]
max_value_bytes = 1024
lease_wait_seconds = 0.2

[namespaces.race]
lease_wait_seconds = 1.0
"""

# Fast failure detection so outage tests take fractions of a second, not seconds.
SIDECAR_ENV = {
    "AGENTIC_CACHE_LISTEN_ADDRESS": "127.0.0.1:0",
    "AGENTIC_CACHE_METRICS_ADDRESS": "127.0.0.1:0",
    "AGENTIC_CACHE_EVENTS": "off",
    "AGENTIC_MEMCACHED_CONNECT_TIMEOUT_SECONDS": "0.05",
    "AGENTIC_MEMCACHED_TIMEOUT_SECONDS": "0.1",
    "AGENTIC_CACHE_BREAKER_FAILURE_THRESHOLD": "2",
    "AGENTIC_CACHE_BREAKER_RESET_SECONDS": "0.2",
    "AGENTIC_CACHE_SHUTDOWN_GRACE_SECONDS": "1",
}


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a test scenario on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within_seconds: float, message: str
) -> None:
    """Await ``check`` until it holds; fail with ``message`` after ``within_seconds``.

    For state in another process (a sidecar's Stats), which offers nothing to await.
    """
    deadline = time.monotonic() + within_seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_seconds}s: {message}")
        await asyncio.sleep(0.02)


MemcachedFactory = Callable[[], Memcached]
"""Fixture type: starts one more private memcached."""
SidecarFactory = Callable[..., Service]
"""Fixture type: starts one more sidecar on the given memcached servers (and env)."""


def start_sidecar(
    workdir: Path,
    servers: Sequence[Memcached],
    policy_file: Path,
    env: Mapping[str, str] | None = None,
) -> Service:
    """Start ``python -m cache_sidecar`` on a free port; return once it is serving."""
    full_env = {
        **SIDECAR_ENV,
        "AGENTIC_MEMCACHED_SERVERS": ",".join(m.address for m in servers),
        "AGENTIC_CACHE_POLICY_FILE": str(policy_file),
        **(env or {}),
    }
    return start_service("cache_sidecar", full_env, workdir)
