"""Event-driven invalidation through the shared RabbitMQ (uniquely named or in a private
vhost, deleted after)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from agentic.cache.v1 import cache_pb2
from kombu.connection import Connection
from kombu.entity import Exchange

from cache_sidecar import Config
from cache_sidecar._config import node_set_queue
from core.cache import CacheClient, Outcome
from devtools.memcached import Memcached
from devtools.ports import free_port
from tests._processes import Service
from tests._scrape import metrics_text
from tests.cache_sidecar._support import MemcachedFactory, SidecarFactory, eventually, run
from tests.workers._stack import private_vhost

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@dataclass(frozen=True)
class Broker:
    """This test's private exchange and queue on the shared broker (or a private vhost)."""

    exchange: str
    queue: str
    url: str = AMQP_URL

    def publish(self, routing_key: str, body: Any, *, raw: bool = False) -> None:
        """Publish one event (JSON unless ``raw``) and wait for the broker's confirm."""
        with Connection(self.url, connect_timeout=5) as conn:
            exchange = Exchange(self.exchange, type="topic", durable=True)
            producer = conn.Producer()
            producer.publish(
                body if raw else json.dumps(body),
                exchange=exchange,
                routing_key=routing_key,
                content_type="application/json",
                content_encoding="utf-8",
                declare=[exchange],
                retry=True,
                retry_policy={"max_retries": 3},
            )

    def queue_depth(self, queue: str | None = None) -> int:
        """Messages in the queue (this one's unless named) that nobody has taken yet."""
        return self._declare_passive(queue or self.queue)[0]

    def consumers(self, queue: str) -> int:
        """Consumers of a queue, which must exist."""
        return self._declare_passive(queue)[1]

    def _declare_passive(self, queue: str) -> tuple[int, int]:
        with Connection(self.url, connect_timeout=5) as conn:
            _, count, consumers = conn.default_channel.queue_declare(queue, passive=True)
            return int(count), int(consumers)


@pytest.fixture
def broker() -> Iterator[Broker]:
    """Unique names per test; the queue and exchange are deleted at the end.

    Requested before the sidecars so it is torn down after them (a live consumer would
    declare the queue again).
    """
    tag = uuid.uuid4().hex[:12]
    names = Broker(exchange=f"test.cache.events.{tag}", queue=f"test.cache.invalidation.{tag}")
    yield names
    with Connection(AMQP_URL, connect_timeout=5) as conn:
        channel = conn.default_channel
        channel.queue_delete(names.queue)
        channel.exchange_delete(names.exchange)


async def fill(cache: CacheClient, namespace: str, key: bytes, value: bytes) -> None:
    read = await cache.get(namespace, key)
    assert read.outcome is Outcome.LOAD
    await cache.fill(namespace, key, read.lease_token, value)
    assert (await cache.get(namespace, key)).value == value


def test_domain_events_invalidate_even_while_memcached_is_down(
    broker: Broker, memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    metrics_port = free_port()
    sidecar = sidecar_factory(
        [memcached],
        {
            "AGENTIC_CACHE_EVENTS": "on",
            "AGENTIC_BROKER_URL": AMQP_URL,
            "AGENTIC_CACHE_EVENTS_EXCHANGE": broker.exchange,
            "AGENTIC_CACHE_EVENTS_QUEUE": broker.queue,
            "AGENTIC_CACHE_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
        },
    )

    async def scenario() -> None:
        async with CacheClient.connect(sidecar.address) as cache:

            async def applied(count: int) -> None:
                async def done() -> bool:
                    return (await cache.stats()).events_applied >= count

                await eventually(done, within_seconds=10, message=f"{count} events applied")

            async def connected() -> bool:
                return (await cache.stats()).events_connected

            async def recovered() -> bool:
                node = (await cache.stats()).nodes[0]
                return not node.quarantined and node.breaker_state == (
                    cache_pb2.BREAKER_STATE_CLOSED
                )

            await eventually(connected, within_seconds=10, message="event consumer to connect")

            # 1. project.updated drops the project's key and every list page.
            await fill(cache, "projects", b"p1", b"v1")
            await fill(cache, "projects", b"p-other", b"kept")
            await fill(cache, "project_lists", b"page-1", b"[p1]")
            event = {"type": "project.updated", "project_id": "p1", "event_id": "e1"}
            await asyncio.to_thread(broker.publish, "project.updated", event)
            await applied(1)
            assert (await cache.get("projects", b"p1")).outcome is Outcome.LOAD
            assert (await cache.get("project_lists", b"page-1")).outcome is Outcome.LOAD
            assert (await cache.get("projects", b"p-other")).value == b"kept"
            stats = {ns.namespace: ns for ns in (await cache.stats()).namespaces}
            assert stats["projects"].invalidations_event == 1
            assert stats["project_lists"].invalidations_namespace == 1

            # 2. A hung memcached: the event is acked only once the node is quarantined,
            #    and the old value is gone once the node is back.
            await fill(cache, "projects", b"p2", b"v1")
            memcached.pause()
            try:
                event = {"type": "project.updated", "project_id": "p2", "event_id": "e2"}
                await asyncio.to_thread(broker.publish, "project.updated", event)
                await applied(2)
                assert (await cache.stats()).nodes[0].quarantined
                assert await asyncio.to_thread(broker.queue_depth) == 0
            finally:
                memcached.resume()
            await eventually(recovered, within_seconds=5, message="node to come back")
            assert (await cache.get("projects", b"p2")).outcome is Outcome.LOAD

            # 3. A killed memcached: same, across a restart on the same port.
            await fill(cache, "projects", b"p3", b"v1")
            memcached.kill()
            event = {"type": "project.deleted", "project_id": "p3", "event_id": "e3"}
            await asyncio.to_thread(broker.publish, "project.deleted", event)
            await applied(3)
            memcached.start()
            await eventually(recovered, within_seconds=5, message="node to come back")
            assert (await cache.get("projects", b"p3")).outcome is Outcome.LOAD

            # 4. An event without its key field invalidates the whole namespace (safe
            #    superset); an undecodable one is rejected, not retried forever.
            await fill(cache, "projects", b"p4", b"v1")
            await asyncio.to_thread(broker.publish, "project.updated", {"event_id": "e4"})
            await applied(4)
            assert (await cache.get("projects", b"p4")).outcome is Outcome.LOAD
            await asyncio.to_thread(broker.publish, "project.updated", b"{not json", raw=True)

            async def rejected() -> bool:
                text = await asyncio.to_thread(metrics_text, metrics_port)
                return 'agentic_cache_events_total{outcome="rejected"} 1.0' in text

            await eventually(rejected, within_seconds=5, message="the bad event to be rejected")
            assert await asyncio.to_thread(broker.queue_depth) == 0

    run(scenario())


@pytest.fixture
def vhost_broker() -> Iterator[Broker]:
    """A private vhost with the default exchange name and no queue named: the sidecars
    derive theirs. Everything they declare goes with the vhost at the end.

    Requested before the sidecars so it is torn down after them.
    """
    with private_vhost() as url:
        yield Broker(exchange=Config().events_exchange, queue="", url=url)


def _events_env(broker: Broker) -> dict[str, str]:
    return {"AGENTIC_CACHE_EVENTS": "on", "AGENTIC_BROKER_URL": broker.url}


async def _connected(stack: AsyncExitStack, sidecars: list[Service]) -> list[CacheClient]:
    """A client of each sidecar (closed with ``stack``), once its event consumer is up."""
    caches = [await stack.enter_async_context(CacheClient.connect(s.address)) for s in sidecars]
    for cache in caches:

        async def connected(cache: CacheClient = cache) -> bool:
            return (await cache.stats()).events_connected

        await eventually(connected, within_seconds=10, message="event consumer to connect")
    return caches


async def _applied(caches: list[CacheClient]) -> list[int]:
    return [(await cache.stats()).events_applied for cache in caches]


def test_sidecars_on_one_node_set_share_a_queue_whatever_the_order(
    vhost_broker: Broker, memcached_factory: MemcachedFactory, sidecar_factory: SidecarFactory
) -> None:
    a, b = memcached_factory(), memcached_factory()
    env = _events_env(vhost_broker)
    sidecars = [sidecar_factory([a, b], env), sidecar_factory([b, a], env)]
    queue = node_set_queue([a.address, b.address])
    keys = [f"p{i}".encode() for i in range(10)]

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            caches = await _connected(stack, sidecars)
            assert await asyncio.to_thread(vhost_broker.consumers, queue) == 2
            for key in keys:
                await fill(caches[0], "projects", key, b"v1")
                # Same strings, same placement: the other sidecar sees the same entry.
                assert (await caches[1].get("projects", key)).value == b"v1"
            for key in keys:
                event = {"type": "project.updated", "project_id": key.decode()}
                await asyncio.to_thread(vhost_broker.publish, "project.updated", event)

            async def all_applied() -> bool:
                return sum(await _applied(caches)) >= len(keys)

            await eventually(all_applied, within_seconds=10, message="every event applied")
            # Competing consumers: each event was applied once, by one of the two.
            assert sum(await _applied(caches)) == len(keys)
            assert await asyncio.to_thread(vhost_broker.queue_depth, queue) == 0
            # Gone for both (each key read once: a second reader would wait on the lease).
            for i, key in enumerate(keys):
                assert (await caches[i % 2].get("projects", key)).outcome is Outcome.LOAD

    run(scenario())


def test_sidecars_on_different_nodes_each_apply_every_event(
    vhost_broker: Broker, memcached_factory: MemcachedFactory, sidecar_factory: SidecarFactory
) -> None:
    a, b = memcached_factory(), memcached_factory()
    env = _events_env(vhost_broker)
    sidecars = [sidecar_factory([a], env), sidecar_factory([b], env)]
    queues = [node_set_queue([a.address]), node_set_queue([b.address])]
    assert queues[0] != queues[1]

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            caches = await _connected(stack, sidecars)
            for queue in queues:
                assert await asyncio.to_thread(vhost_broker.consumers, queue) == 1
            for cache in caches:
                await fill(cache, "projects", b"p1", b"v1")
            event = {"type": "project.updated", "project_id": "p1", "event_id": "e1"}
            await asyncio.to_thread(vhost_broker.publish, "project.updated", event)

            async def both_applied() -> bool:
                return min(await _applied(caches)) >= 1

            await eventually(both_applied, within_seconds=10, message="both node sets applied")
            for cache in caches:
                assert (await cache.get("projects", b"p1")).outcome is Outcome.LOAD

    run(scenario())


def test_an_explicit_queue_other_than_the_derived_one_is_used_with_a_warning(
    vhost_broker: Broker, memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    env = {**_events_env(vhost_broker), "AGENTIC_CACHE_EVENTS_QUEUE": "fleet.invalidations"}
    sidecar = sidecar_factory([memcached], env)

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            await _connected(stack, [sidecar])

    run(scenario())
    assert vhost_broker.consumers("fleet.invalidations") == 1
    warnings = [line for line in sidecar.log().splitlines() if "WARNING" in line]
    derived = node_set_queue([memcached.address])
    assert any("fleet.invalidations" in w and derived in w for w in warnings), sidecar.log()
