"""The ``event_outbox`` table: domain events committed with their change, not yet confirmed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Table, delete, func, insert, select, update
from sqlalchemy.orm import Session

from core.db import EventOutboxRow
from core.events._event import DomainEvent

# The writer's own publish (the fast path) gets this long before a relay takes the row.
FAST_PATH_GRACE_SECONDS = 1.0

_TABLE = cast(Table, EventOutboxRow.__table__)


@dataclass(frozen=True, slots=True)
class Outboxed:
    """An event in the outbox: its row id and the event."""

    id: int
    event: DomainEvent


def add(session: Session, event: DomainEvent) -> Outboxed:
    """Put ``event`` into the outbox in the caller's transaction."""
    row_id = session.execute(
        insert(_TABLE).returning(_TABLE.c.id),
        {
            "event_type": event.type.value,
            "body": event.to_json(),
            "create_time": event.time,
            "relay_time": event.time + timedelta(seconds=FAST_PATH_GRACE_SECONDS),
        },
    ).scalar_one()
    return Outboxed(int(row_id), event)


def claim_due(
    connection: Connection, now: datetime, *, lease_seconds: float, limit: int
) -> list[Outboxed]:
    """Rows due at ``now``, oldest first, with their ``relay_time`` moved ``lease_seconds``
    on: another relay skips them meanwhile, and they come due again if this one dies."""
    due = (
        select(_TABLE.c.id)
        .where(_TABLE.c.relay_time <= now)
        .order_by(_TABLE.c.relay_time, _TABLE.c.id)
        .limit(limit)
    )
    # The relay_time condition again: a relay that waited on another's row lock sees the
    # moved relay_time (PostgreSQL re-checks it) and leaves the row alone.
    rows = connection.execute(
        update(_TABLE)
        .where(_TABLE.c.id.in_(due.scalar_subquery()), _TABLE.c.relay_time <= now)
        .values(relay_time=now + timedelta(seconds=lease_seconds))
        .returning(_TABLE.c.id, _TABLE.c.body)
    )
    claimed = [Outboxed(int(row_id), DomainEvent.from_json(body)) for row_id, body in rows]
    return sorted(claimed, key=lambda item: item.id)


def release(connection: Connection, ids: Sequence[int], now: datetime) -> None:
    """Make claimed rows due again at once (their publish failed)."""
    if ids:
        connection.execute(update(_TABLE).where(_TABLE.c.id.in_(ids)).values(relay_time=now))


def remove(connection: Connection, ids: Sequence[int]) -> None:
    """Forget confirmed events (one statement however many)."""
    if ids:
        connection.execute(delete(_TABLE).where(_TABLE.c.id.in_(ids)))


def backlog(connection: Connection) -> int:
    """Events not yet confirmed."""
    return int(connection.execute(select(func.count()).select_from(_TABLE)).scalar_one())
