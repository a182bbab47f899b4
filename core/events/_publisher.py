"""Confirmed, persistent publishes of domain events to the topic exchange."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from kombu.connection import Connection
from kombu.entity import Exchange
from kombu.messaging import Producer
from prometheus_client import Counter

from core.backoff import CoolDown
from core.events._event import DomainEvent

log = logging.getLogger(__name__)

# After a failure, publishes fail at once for this long instead of each waiting out a
# connect timeout; the relay tries again after it, so it also bounds how soon events flow
# once the broker is back.
COOL_DOWN_SECONDS = 1.0

PUBLISHED = Counter(
    "agentic_events_published_total", "Domain events confirmed by the broker.", ("type",)
)
PUBLISH_FAILURES = Counter(
    "agentic_events_publish_failures_total",
    "Domain event publishes the broker did not take (the outbox keeps them).",
    ("type",),
)


class Publisher(Protocol):
    """Something that publishes domain events; blocking, call it from a worker thread."""

    def publish(self, event: DomainEvent) -> bool:
        """Publish one event; True when it needs no further publish (the broker confirmed
        it, or events are switched off)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class NullPublisher:
    """Events are switched off (no broker, or AGENTIC_EVENTS_ENABLED=false): all are dropped."""

    def publish(self, event: DomainEvent) -> bool:
        """Drop the event; nothing will ever publish it."""
        return True

    def close(self) -> None:
        """Nothing to release."""


class AmqpPublisher:
    """Confirmed, persistent publishes to a durable topic exchange over one connection."""

    def __init__(self, url: str, exchange: str, *, timeout_seconds: float = 2.0) -> None:
        self._connection = Connection(
            url,
            connect_timeout=timeout_seconds,
            transport_options={"confirm_publish": True},
        )
        self._exchange = Exchange(exchange, type="topic", durable=True)
        self._timeout = timeout_seconds
        self._lock = threading.Lock()  # one channel: publishes are serialised
        self._producer: Producer | None = None
        self._cool_down = CoolDown(COOL_DOWN_SECONDS)

    def publish(self, event: DomainEvent) -> bool:
        """Publish ``event`` with routing key ``event.type``; True once confirmed."""
        with self._lock:
            if self._cool_down.active:
                PUBLISH_FAILURES.labels(event.type.value).inc()
                return False
            try:
                if self._producer is None:
                    # No pause between tries (kombu sleeps 2 s by default): a write may be
                    # waiting, and a refused connection must fail at once.
                    self._connection.ensure_connection(
                        max_retries=1, interval_start=0, timeout=self._timeout
                    )
                    self._producer = Producer(self._connection.channel(), self._exchange)
                    self._exchange.declare(channel=self._producer.channel)
                self._producer.publish(
                    event.to_json(),
                    routing_key=event.type.value,
                    content_type="application/json",
                    delivery_mode=2,
                    timeout=self._timeout,
                )
            except Exception:
                # Broker down or refused: drop the channel so the next publish reconnects.
                log.warning("event %s not published (the outbox keeps it)", event.type.value)
                PUBLISH_FAILURES.labels(event.type.value).inc()
                self._producer = None
                self._connection.release()
                self._cool_down.start()
                return False
        PUBLISHED.labels(event.type.value).inc()
        return True

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._connection.release()
