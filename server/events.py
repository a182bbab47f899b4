"""Domain events: what changed, published to the RabbitMQ topic exchange ``agentic.events``.

Consumers (today: every cache sidecar's durable invalidation queue) bind by routing key,
which is the event type (``project.updated``). Messages are JSON, persistent, and
published with publisher confirms, so a publish that returned was taken by the broker.

The synchronous Invalidate call on the write path is what keeps caches correct when
everything is up; events carry the same invalidation to sidecars that missed it (down,
restarting, on other hosts). A publish that fails is counted and logged, never retried
on the request path: the write itself is already committed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Protocol

from kombu.connection import Connection
from kombu.entity import Exchange
from kombu.messaging import Producer
from prometheus_client import Counter

log = logging.getLogger(__name__)

COOL_DOWN_SECONDS = 5.0

PUBLISHED = Counter(
    "agentic_events_published_total", "Domain events confirmed by the broker.", ("type",)
)
PUBLISH_FAILURES = Counter(
    "agentic_events_publish_failures_total", "Domain events the broker did not take.", ("type",)
)


class Publisher(Protocol):
    """Something that publishes domain events; blocking, call it from a worker thread."""

    def publish(self, event_type: str, **fields: str) -> bool:
        """Publish one event; True when the broker confirmed it."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class NullPublisher:
    """Publishes nothing: events are disabled (AGENTIC_EVENTS_URL is empty)."""

    def publish(self, event_type: str, **fields: str) -> bool:
        """Drop the event."""
        return False

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
        # After a failure, writes skip the broker for a while instead of each waiting out
        # a connect timeout: a broker outage must not slow every write down.
        self._skip_until = 0.0

    def publish(self, event_type: str, **fields: str) -> bool:
        """Publish ``{"type", "event_id", "time", **fields}`` with routing key ``event_type``."""
        body = {
            "type": event_type,
            "event_id": str(uuid.uuid4()),
            "time": datetime.now(UTC).isoformat(),
            **fields,
        }
        with self._lock:
            if time.monotonic() < self._skip_until:
                PUBLISH_FAILURES.labels(event_type).inc()
                return False
            try:
                if self._producer is None:
                    # No pause between tries (kombu sleeps 2 s by default): a write is
                    # waiting, and a refused connection must fail at once.
                    self._connection.ensure_connection(
                        max_retries=1, interval_start=0, timeout=self._timeout
                    )
                    self._producer = Producer(self._connection.channel(), self._exchange)
                    self._exchange.declare(channel=self._producer.channel)
                self._producer.publish(
                    json.dumps(body),
                    routing_key=event_type,
                    content_type="application/json",
                    delivery_mode=2,
                    timeout=self._timeout,
                )
            except Exception:
                # Broker down or refused: drop the channel so the next publish reconnects.
                log.warning("event %s not published", event_type, exc_info=True)
                PUBLISH_FAILURES.labels(event_type).inc()
                self._producer = None
                self._connection.release()
                self._skip_until = time.monotonic() + COOL_DOWN_SECONDS
                return False
        PUBLISHED.labels(event_type).inc()
        return True

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._connection.release()
