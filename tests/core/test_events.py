"""Domain events reach a durable queue bound to the topic exchange, via a real RabbitMQ."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from core.events import AmqpPublisher, DomainEvent, EventType

BROKER = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def exchange_name() -> Iterator[str]:
    """A unique exchange for this test, deleted afterwards."""
    name = f"agentic.test.events.{uuid.uuid4().hex[:10]}"
    yield name
    with Connection(BROKER) as conn:
        Exchange(name, type="topic").bind(conn.default_channel).delete()


def test_published_event_is_confirmed_and_routed_by_type(exchange_name: str) -> None:
    exchange = Exchange(exchange_name, type="topic", durable=True)
    queue = Queue(f"{exchange_name}.q", exchange, routing_key="project.updated", auto_delete=True)
    publisher = AmqpPublisher(BROKER, exchange_name)
    with Connection(BROKER) as conn:
        bound = queue.bind(conn.default_channel)
        exchange.bind(conn.default_channel).declare()
        bound.declare()
        try:
            assert publisher.publish(DomainEvent(EventType.PROJECT_UPDATED, "p-1"))
            # Not bound: dropped by the exchange, yet confirmed.
            assert publisher.publish(DomainEvent(EventType.PROJECT_CREATED, "p-0"))
            message = bound.get(no_ack=True)
            assert message is not None, "the confirmed event should be in the queue"
            body = json.loads(message.body)
            assert body["type"] == "project.updated"
            assert body["project_id"] == "p-1"
            uuid.UUID(body["event_id"])
            assert message.delivery_info["routing_key"] == "project.updated"
            assert message.properties.get("delivery_mode") == 2
            assert bound.get(no_ack=True) is None
        finally:
            bound.delete()
            publisher.close()


def test_unreachable_broker_fails_fast_without_raising() -> None:
    unreachable = "amqp://guest:guest@127.0.0.1:1//"
    publisher = AmqpPublisher(unreachable, "agentic.none", timeout_seconds=0.5)
    try:
        begin = time.monotonic()
        assert publisher.publish(DomainEvent(EventType.PROJECT_UPDATED, "p-2")) is False
        # A refused connection fails at once; a write must not wait out a reconnect pause.
        assert time.monotonic() - begin < 1.0
        # Cooling down: the next write does not wait for the broker again.
        begin = time.monotonic()
        assert publisher.publish(DomainEvent(EventType.PROJECT_UPDATED, "p-3")) is False
        assert time.monotonic() - begin < 0.1
    finally:
        publisher.close()
