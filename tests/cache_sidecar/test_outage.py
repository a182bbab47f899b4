"""Memcached failures: degrade fast, never error, never serve what may be stale afterwards."""

from __future__ import annotations

import asyncio
import statistics
import time

from agentic.cache.v1 import cache_pb2

from core.cache import CacheClient, Outcome
from devtools.memcached import Memcached
from devtools.ports import free_port
from tests._scrape import metrics_text
from tests.cache_sidecar._support import MemcachedFactory, SidecarFactory, eventually, run

NS = "projects"


async def node_state(cache: CacheClient, index: int = 0) -> cache_pb2.NodeStats:
    return (await cache.stats()).nodes[index]


async def recovered(cache: CacheClient) -> bool:
    nodes = (await cache.stats()).nodes
    return all(
        not n.quarantined and n.breaker_state == cache_pb2.BREAKER_STATE_CLOSED for n in nodes
    )


async def fill(cache: CacheClient, key: bytes, value: bytes) -> None:
    read = await cache.get(NS, key)
    assert read.outcome is Outcome.LOAD
    await cache.fill(NS, key, read.lease_token, value)
    assert (await cache.get(NS, key)).value == value


def test_killed_memcached_degrades_to_load_no_fill_and_recovers_without_old_values(
    memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    metrics_port = free_port()
    metrics = {"AGENTIC_CACHE_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}
    sidecar = sidecar_factory([memcached], metrics)
    keys = [b"project-%d" % i for i in range(20)]

    async def scenario() -> None:
        async with CacheClient.connect(sidecar.address) as cache:
            for key in keys:
                await fill(cache, key, b"old:" + key)

            errors: list[BaseException] = []
            served: list[tuple[float, bytes | None]] = []
            stop = asyncio.Event()

            async def reader(worker: int) -> None:
                i = worker
                while not stop.is_set():
                    key = keys[i % len(keys)]
                    i += 1

                    async def load(key: bytes = key) -> bytes:
                        return b"new:" + key

                    try:
                        served.append((time.monotonic(), await cache.read_through(NS, key, load)))
                    except Exception as exc:
                        errors.append(exc)
                    await asyncio.sleep(0.002)

            readers = [asyncio.create_task(reader(w)) for w in range(8)]
            await asyncio.sleep(0.2)
            memcached.kill()
            killed_at = time.monotonic()

            await eventually(
                lambda: _quarantined(cache),
                within_seconds=5,
                message="breaker to open on the dead node",
            )
            # While down: LOAD_NO_FILL answers without waiting for a memcached timeout
            # (0.1 s here), and the node reported open and quarantined.
            latencies = []
            for key in keys[:7]:
                started = time.monotonic()
                read = await cache.get(NS, key)
                latencies.append(time.monotonic() - started)
                assert read.outcome is Outcome.LOAD_NO_FILL
            assert statistics.median(latencies) < 0.09, latencies
            node = await node_state(cache)
            assert node.breaker_state == cache_pb2.BREAKER_STATE_OPEN
            assert node.breaker_transitions >= 1
            assert not node.reachable
            scrape = await asyncio.to_thread(metrics_text, metrics_port)
            label = f'node="{memcached.address}"'
            assert f'agentic_cache_breaker_state{{{label},state="open"}} 1.0' in scrape
            assert f"agentic_cache_node_quarantined{{{label}}} 1.0" in scrape

            memcached.start()  # same port, empty
            restarted_at = time.monotonic()
            await eventually(
                lambda: recovered(cache), within_seconds=5, message="node to come back"
            )
            await asyncio.sleep(0.2)  # let the readers refill through the recovered node
            stop.set()
            await asyncio.gather(*readers)

            assert errors == []
            after_restart = [v for t, v in served if t >= restarted_at]
            assert after_restart, "no reads after the restart"
            assert all(v is not None and v.startswith(b"new:") for v in after_restart)
            during = [v for t, v in served if killed_at + 0.5 <= t < restarted_at]
            assert all(v is not None and v.startswith(b"new:") for v in during)
            for key in keys:
                assert (await cache.get(NS, key)).value != b"old:" + key
            stats = await cache.stats()
            assert stats.nodes[0].breaker_transitions >= 3  # closed->open->half_open->closed

    run(scenario())


def test_hung_node_with_missed_invalidation_never_serves_the_old_value(
    memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    # A breaker that will not open: only the failed invalidation may quarantine the node.
    sidecar = sidecar_factory([memcached], {"AGENTIC_CACHE_BREAKER_FAILURE_THRESHOLD": "100"})

    async def scenario() -> None:
        async with CacheClient.connect(sidecar.address) as cache:
            await fill(cache, b"p1", b"v1")
            memcached.pause()
            try:
                # The write path: origin becomes v2, then the invalidation must not be lost.
                started = time.monotonic()
                await cache.invalidate(NS, [b"p1"])  # returns: the node is quarantined
                assert time.monotonic() - started < 1.0
                node = await node_state(cache)
                assert node.quarantined
                read = await cache.get(NS, b"p1")
                assert read.outcome is Outcome.LOAD_NO_FILL
            finally:
                memcached.resume()  # v1 is still in there

            # Read as the API server would, until the cache serves a hit again.
            hits: list[bytes] = []
            deadline = time.monotonic() + 5
            while not hits and time.monotonic() < deadline:
                read = await cache.get(NS, b"p1")
                if read.outcome is Outcome.HIT:
                    hits.append(read.value)
                elif read.outcome is Outcome.LOAD:
                    await cache.fill(NS, b"p1", read.lease_token, b"v2")  # origin says v2
                else:
                    await asyncio.sleep(0.01)  # still quarantined: the origin answers
            assert hits == [b"v2"], "the pre-outage v1 was served, or nothing was cached"
            assert await recovered(cache)
            assert (await cache.get(NS, b"p1")).value == b"v2"

    run(scenario())


def test_a_dead_node_does_not_affect_keys_on_the_other(
    memcached_factory: MemcachedFactory, sidecar_factory: SidecarFactory
) -> None:
    nodes = [memcached_factory(), memcached_factory()]
    sidecar = sidecar_factory(nodes)
    keys = [b"spread-%d" % i for i in range(40)]

    async def scenario() -> None:
        async with CacheClient.connect(sidecar.address) as cache:
            for key in keys:
                await fill(cache, key, key)
            items = [n.curr_items for n in (await cache.stats()).nodes]
            assert all(count > 5 for count in items), f"keys not spread: {items}"

            nodes[1].kill()
            outcomes = {}
            for _ in range(3):  # enough failures to open the dead node's breaker
                outcomes = {key: (await cache.get(NS, key)).outcome for key in keys}
            hits = [k for k, o in outcomes.items() if o is Outcome.HIT]
            misses = [k for k, o in outcomes.items() if o is Outcome.LOAD_NO_FILL]
            assert hits
            assert misses
            assert len(hits) + len(misses) == len(keys)
            states = [n.breaker_state for n in (await cache.stats()).nodes]
            assert states == [cache_pb2.BREAKER_STATE_CLOSED, cache_pb2.BREAKER_STATE_OPEN]
            # Namespace invalidation still works on the live node; the dead one is covered
            # by its quarantine.
            await cache.invalidate_namespace(NS)
            for key in hits[:3]:
                assert (await cache.get(NS, key)).outcome is Outcome.LOAD

    run(scenario())


async def _quarantined(cache: CacheClient) -> bool:
    return (await node_state(cache)).quarantined
