"""Stampede protection across sidecar processes: one origin load per cold key."""

from __future__ import annotations

import asyncio
import uuid

from core.cache import CacheClient
from devtools.memcached import Memcached
from tests.cache_sidecar._support import SidecarFactory, run

READERS_PER_SIDECAR = 100


def test_200_concurrent_cold_reads_through_two_sidecars_load_once(
    memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    # Generous memcached timeouts: this test is about leases, and on a starved 2-core CI
    # host a 0.1 s timeout would (correctly) degrade a few reads to LOAD_NO_FILL.
    env = {
        "AGENTIC_MEMCACHED_TIMEOUT_SECONDS": "2",
        "AGENTIC_MEMCACHED_CONNECT_TIMEOUT_SECONDS": "2",
    }
    sidecars = [sidecar_factory([memcached], env), sidecar_factory([memcached], env)]
    key = f"cold-{uuid.uuid4().hex}".encode()
    loads = 0

    async def loader() -> bytes:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.2)  # a slow origin: everyone else piles up meanwhile
        return b"the value"

    async def scenario() -> list[bytes | None]:
        clients = [CacheClient.connect(s.address, timeout_seconds=5) for s in sidecars]
        try:
            reads = [
                client.read_through("projects", key, loader)
                for client in clients
                for _ in range(READERS_PER_SIDECAR)
            ]
            results = await asyncio.gather(*reads)
            stats = [await client.stats() for client in clients]
        finally:
            for client in clients:
                await client.close()
        projects = [next(n for n in s.namespaces if n.namespace == "projects") for s in stats]
        assert sum(p.lease_grants for p in projects) == 1, projects
        assert sum(p.lease_wait_timeouts for p in projects) == 0, projects
        assert sum(p.hits for p in projects) == 2 * READERS_PER_SIDECAR - 1, projects
        return results

    results = run(scenario())
    assert loads == 1
    assert results == [b"the value"] * (2 * READERS_PER_SIDECAR)
