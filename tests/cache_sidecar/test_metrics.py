"""The sidecar's Prometheus endpoint counts what a client did, per namespace and node.

A client does a known sequence of Gets, Fills and Invalidates; the scraped counters must
equal the numbers the test counted itself (not the sidecar's Stats RPC, which reads the
same counters), and the node's eviction counter must equal memcached's own ``stats``
answer, read over a raw socket, after the test overfilled a 2 MiB memcached.
"""

from __future__ import annotations

import os
import socket
import uuid

from prometheus_client.parser import text_string_to_metric_families

from core.cache import CacheClient, FillResult, Outcome
from devtools.ports import free_port
from tests._processes import Memcached
from tests._scrape import metrics_text
from tests.cache_sidecar._support import SidecarFactory, run

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

BIG_VALUES = 40
BIG_VALUE_BYTES = 200 * 1024  # random, so the sidecar's compression cannot shrink them


def _samples(port: int) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics_text(port))
        for s in family.samples
    }


def _memcached_stat(node: Memcached, name: str) -> int:
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as conn:
        conn.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = conn.recv(65536)
            assert chunk, "memcached closed the connection during stats"
            data += chunk
    for line in data.decode().splitlines():
        parts = line.split()
        if parts[:2] == ["STAT", name]:
            return int(parts[2])
    raise AssertionError(f"memcached reports no {name}")


def test_scraped_counters_are_what_the_client_did(sidecar_factory: SidecarFactory) -> None:
    node = Memcached(free_port(), memory_mb=2)
    node.start()
    try:
        sidecar = sidecar_factory([node], {"AGENTIC_CACHE_METRICS_ADDRESS": "127.0.0.1:0"})
        port = int(sidecar.ready["metrics_port"])
        filled = 3
        tag = uuid.uuid4().hex[:8]

        async def scenario() -> None:
            async with CacheClient.connect(sidecar.address) as cache:
                for i in range(filled):  # a miss and a stored fill each, then a hit each
                    key = f"p-{tag}-{i}".encode()
                    read = await cache.get("projects", key)
                    assert read.outcome is Outcome.LOAD
                    assert await cache.fill("projects", key, read.lease_token, b"v") is (
                        FillResult.STORED
                    )
                for i in range(filled):
                    assert (await cache.get("projects", f"p-{tag}-{i}".encode())).value == b"v"
                # One fill made stale by an Invalidate between its Get and its Fill.
                raced = f"raced-{tag}".encode()
                read = await cache.get("projects", raced)
                await cache.invalidate("projects", [raced])
                assert await cache.fill("projects", raced, read.lease_token, b"old") is (
                    FillResult.STALE
                )
                # 8 MiB of incompressible values into a 2 MiB memcached: it must evict.
                for i in range(BIG_VALUES):
                    key = f"big-{tag}-{i}".encode()
                    read = await cache.get("artifacts", key)
                    await cache.fill(
                        "artifacts", key, read.lease_token, os.urandom(BIG_VALUE_BYTES)
                    )

        run(scenario())
        samples = _samples(port)

        def counter(name: str, namespace: str) -> float:
            return samples[(f"{name}_total", (("namespace", namespace),))]

        assert counter("agentic_cache_misses", "projects") == filled + 1
        assert counter("agentic_cache_lease_grants", "projects") == filled + 1
        assert counter("agentic_cache_origin_loads", "projects") == filled + 1
        assert counter("agentic_cache_fills_stored", "projects") == filled
        assert counter("agentic_cache_hits", "projects") == filled
        assert counter("agentic_cache_stale_set_rejections", "projects") == 1
        assert counter("agentic_cache_invalidations_rpc", "projects") == 1
        by_source = (("namespace", "projects"), ("source", "rpc"))
        assert samples[("agentic_cache_invalidations_total", by_source)] == 1
        assert counter("agentic_cache_misses", "artifacts") == BIG_VALUES
        assert counter("agentic_cache_lease_waits", "projects") == 0
        assert counter("agentic_cache_lease_wait_timeouts", "projects") == 0

        labels = (("node", node.address),)
        evicted = _memcached_stat(node, "evictions")
        assert evicted > 0, "2 MiB of memcached took 8 MiB without evicting"
        # The sidecar reads memcached's stats at scrape time: the two answers are the same
        # unless something evicted in between, and nothing writes any more.
        assert samples[("agentic_memcached_evictions_total", labels)] == evicted
        closed = (("node", node.address), ("state", "closed"))
        assert samples[("agentic_cache_breaker_state", closed)] == 1
    finally:
        node.stop()
