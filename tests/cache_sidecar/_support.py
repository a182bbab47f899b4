"""What the cache sidecar tests share: the test policy, fixture types, async helpers
(the processes themselves start through ``tests._processes``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from devtools.memcached import Memcached
from tests._processes import Service

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

[namespaces.artifacts]
invalidate_keys_on = { "artifact.*" = "artifact_id" }

[namespaces.rule_sets]
invalidate_keys_on = { "rule_set.*" = "rule_set_id" }

# Tiny limits: the size cap and lease-wait timeouts without slow tests.
[namespaces.small]
max_value_bytes = 1024
lease_wait_seconds = 0.2

[namespaces.race]
lease_wait_seconds = 1.0
"""


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
