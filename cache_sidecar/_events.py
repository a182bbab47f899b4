"""Event-driven invalidation: a kombu consumer thread applying domain events.

The consumer owns a durable queue (AGENTIC_CACHE_EVENTS_QUEUE) bound to a durable topic
exchange (AGENTIC_CACHE_EVENTS_EXCHANGE) with every event pattern of the policy as a
binding key. A message body is JSON such as::

    {"type": "project.updated", "project_id": "6f1c...", "event_id": "..."}

(``type`` falls back to the routing key when absent). Sidecars sharing a queue are
competing consumers: each event is applied once, to the shared Memcached nodes.

Ack semantics: a message is acked only after the invalidation took effect on every
node it concerns, where "took effect" means deleted / generation moved, or the node was
quarantined because it could not be reached (it is flushed before it serves again, so
the invalidation cannot be lost). A failure of the applier itself requeues the message.
A body that is not a JSON object with a type is rejected without requeue (it can never
be applied; a dead-letter exchange on the queue keeps it if one is configured).

An event naming a key rule's namespace but lacking the key field invalidates that whole
namespace: the safe superset of what it meant.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue, binding

from cache_sidecar._metrics import Counter, Counters
from cache_sidecar._policy import Policy
from cache_sidecar._store import Store
from core.backoff import Backoff

__all__ = ["EventApplier", "EventConsumer", "parse_event"]

_log = logging.getLogger(__name__)

# Bounded waits everywhere so stop() is prompt: drain at most this long per loop turn.
_DRAIN_SECONDS = 0.5
_HEARTBEAT_SECONDS = 10
_CONNECT_TIMEOUT_SECONDS = 2.0
_RECONNECT = Backoff(first_seconds=0.2, max_seconds=5.0)
# After the applier itself failed (a bug, not an outage), pause before the redelivery.
_REQUEUE_PAUSE_SECONDS = 0.5
_PREFETCH = 32


def parse_event(body: bytes | str, routing_key: str | None) -> dict[str, Any] | None:
    """Decode a message body into an event dict with a string ``type``, or None."""
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(event, dict):
        return None
    if not isinstance(event.get("type"), str) or not event["type"]:
        if not routing_key:
            return None
        event["type"] = routing_key
    return event


class EventApplier:
    """Applies one event's invalidations to Memcached. Blocking; thread-safe."""

    def __init__(self, policy: Policy, store: Store, counters: Counters) -> None:
        self._policy = policy
        self._store = store
        self._counters = counters

    def apply(self, event: Mapping[str, Any]) -> None:
        """Apply every invalidation the policy attaches to this event's type."""
        event_type = str(event["type"])
        for rule in self._policy.invalidations_for(event_type):
            ns = rule.namespace
            key = None if rule.key_field is None else _key_of(event.get(rule.key_field))
            if rule.key_field is not None and key is None:
                _log.warning(
                    "event %s (%s) has no usable %r: invalidating namespace %s",
                    event.get("event_id"),
                    event_type,
                    rule.key_field,
                    ns,
                )
            if key is None:
                self._store.invalidate_namespace(ns)
                self._counters.add(ns, Counter.INVALIDATIONS_NAMESPACE)
            else:
                self._store.invalidate_keys(ns, [key])
            self._counters.add(ns, Counter.INVALIDATIONS_EVENT)


def _key_of(value: Any) -> bytes | None:
    # Keys are the UTF-8 bytes of the id, as the API server passes them to Get.
    if isinstance(value, str) and value:
        return value.encode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode("ascii")
    return None


class EventConsumer:
    """Consumes domain events in a daemon thread until stop(); reconnects forever."""

    def __init__(
        self,
        *,
        url: str,
        exchange: str,
        queue: str,
        binding_keys: tuple[str, ...],
        applier: EventApplier,
        counters: Counters,
    ) -> None:
        self._url = url
        self._exchange = Exchange(exchange, type="topic", durable=True)
        self._queue = Queue(
            queue,
            bindings=[binding(self._exchange, routing_key=key) for key in binding_keys],
            durable=True,
        )
        self._applier = applier
        self._counters = counters
        self._stop = threading.Event()
        self._connected = False
        self._thread = threading.Thread(target=self._run, name="cache-events", daemon=True)

    @property
    def connected(self) -> bool:
        """True while consuming (the queue and its bindings are declared)."""
        return self._connected

    def start(self) -> None:
        """Start the consumer thread."""
        self._thread.start()

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Ask the thread to finish its current message and exit; wait a bounded time."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_seconds)

    def _run(self) -> None:
        delays = _RECONNECT.delays()
        while not self._stop.is_set():
            delay = next(delays)
            try:
                self._consume()
                delays = _RECONNECT.delays()  # it was consuming: a new outage starts afresh
            except Exception as exc:
                # Broker down, connection reset, channel error: the queue is durable,
                # so nothing published meanwhile is lost; reconnect with backoff.
                _log.warning("event consumer disconnected (%r); retrying in %.1fs", exc, delay)
            finally:
                self._connected = False
            self._stop.wait(delay)  # a stop request ends the wait at once

    def _consume(self) -> None:
        with Connection(
            self._url, connect_timeout=_CONNECT_TIMEOUT_SECONDS, heartbeat=_HEARTBEAT_SECONDS
        ) as conn:
            conn.connect()
            with conn.Consumer(
                [self._queue], on_message=self._on_message, prefetch_count=_PREFETCH
            ):
                self._connected = True
                _log.info("event consumer connected to %s", self._queue.name)
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError):  # nothing arrived; go round
                        conn.drain_events(timeout=_DRAIN_SECONDS)
                    conn.heartbeat_check()

    def _on_message(self, message: Any) -> None:
        routing_key = message.delivery_info.get("routing_key")
        event = parse_event(message.body, routing_key)
        if event is None:
            _log.error("rejecting undecodable event (routing key %r)", routing_key)
            self._counters.add_event(rejected=1)
            message.reject(requeue=False)
            return
        try:
            self._applier.apply(event)
        except Exception:
            _log.exception("applying event %s failed; requeued", event.get("event_id"))
            self._counters.add_event(retried=1)
            message.requeue()
            self._stop.wait(_REQUEUE_PAUSE_SECONDS)
            return
        # Only now: every invalidation was applied or its node quarantined.
        message.ack()
        self._counters.add_event(applied=1)
