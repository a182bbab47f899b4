"""Domain events: what changed, written with the change and relayed to the broker.

A write puts its event into the ``event_outbox`` table in the same transaction as the
change (``add``), so a committed change cannot lose its event, whatever then happens to
the request, the process or the broker. The writer publishes it at once (the fast path);
every replica's ``EventRelay`` publishes whatever the broker has not confirmed yet.
Consumers (every cache sidecar's durable invalidation queue) bind by routing key, the
event type (``project.updated``). A duplicate is harmless: an invalidation is idempotent.
"""

from core.events._event import DomainEvent
from core.events._outbox import Outboxed, add
from core.events._publisher import AmqpPublisher, NullPublisher, Publisher
from core.events._relay import EventRelay
from core.events._types import EventType

__all__ = [
    "AmqpPublisher",
    "DomainEvent",
    "EventRelay",
    "EventType",
    "NullPublisher",
    "Outboxed",
    "Publisher",
    "add",
]
