"""One domain event, and the JSON the consumers read."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.events._types import EventType


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """``type`` changed the object whose id is ``key``.

    The JSON body is ``{"type", "event_id", "time", <type.key_field>: key}``, for example
    ``{"type": "project.updated", "project_id": "6f1c…", …}``; the sidecar's policy names
    the same key field for the namespaces the event invalidates.
    """

    type: EventType
    key: str
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> str:
        """The message body."""
        return json.dumps(
            {
                "type": self.type.value,
                "event_id": self.event_id,
                "time": self.time.isoformat(),
                self.type.key_field: self.key,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> DomainEvent:
        """The event of a body ``to_json`` wrote."""
        body: dict[str, Any] = json.loads(text)
        event_type = EventType(body["type"])
        return cls(
            event_type,
            str(body[event_type.key_field]),
            str(body["event_id"]),
            datetime.fromisoformat(str(body["time"])),
        )
