"""One domain event, and the JSON the consumers read."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """``type`` (also the routing key) and the string fields that name what changed.

    The JSON body is ``{"type", "event_id", "time", **fields}``; the sidecar's policy maps
    a type to the field that holds the cache key (``project_id`` for ``project.*``).
    """

    type: str
    fields: dict[str, str]
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> str:
        """The message body."""
        return json.dumps(
            {"type": self.type, "event_id": self.event_id, "time": self.time.isoformat()}
            | self.fields
        )

    @classmethod
    def from_json(cls, text: str) -> DomainEvent:
        """The event of a body ``to_json`` wrote."""
        body: dict[str, Any] = json.loads(text)
        event_type, event_id = str(body.pop("type")), str(body.pop("event_id"))
        time = datetime.fromisoformat(str(body.pop("time")))
        return cls(event_type, {k: str(v) for k, v in body.items()}, event_id, time)
