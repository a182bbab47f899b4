"""The audit log as the API server uses it: admin calls written, every event read back.

Plain synchronous code on one engine. Writing is ``core.audit.AuditWriter`` (also what the
beat records its job runs with: subject ``beat/<holder>``, action ``job:<name>``, so the log
answers "what ran on its own" as well as "who ran it"). ``AuditLog.list`` reads newest
first, paged like every listing (``server.paging``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agentic.admin.v1 import admin_pb2
from sqlalchemy import Engine, select, tuple_
from sqlalchemy.orm import sessionmaker

from core.audit import AuditWriter
from core.db import AuditEventRow, utc
from server import paging as _paging

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
_FILTER_KEY = "audit_events"  # one listing, no filters; the key still binds tokens to it


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of audit events and the token for the next one ("" when last)."""

    events: list[admin_pb2.AuditEvent]
    next_page_token: str


def _to_proto(row: AuditEventRow) -> admin_pb2.AuditEvent:
    event = admin_pb2.AuditEvent(
        id=row.id,
        subject=row.subject,
        action=row.action,
        request_json=row.request_json,
        outcome=row.outcome,
    )
    event.time.FromDatetime(utc(row.create_time))
    return event


class AuditLog:
    """Writes and pages through ``audit_events`` on one engine."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._writer = AuditWriter(engine)

    def record(self, *, subject: str, action: str, request_json: str, outcome: str) -> None:
        """Append one event now; a failure is logged, never raised (``core.audit``)."""
        self._writer.record(
            subject=subject, action=action, request_json=request_json, outcome=outcome
        )

    def list(self, *, page_size: int, page_token: str) -> AuditPage:
        """A page of events, newest first (keyset over (create_time, id) descending)."""
        size = page_size or DEFAULT_PAGE_SIZE
        cursor = _paging.decode(page_token, _FILTER_KEY)
        query = select(AuditEventRow)
        if cursor is not None:
            query = query.where(
                tuple_(AuditEventRow.create_time, AuditEventRow.id)
                < (cursor.create_time, cursor.id)
            )
        # One extra row tells whether another page exists without a COUNT.
        query = query.order_by(AuditEventRow.create_time.desc(), AuditEventRow.id.desc())
        with self._sessions() as session:
            rows = list(session.scalars(query.limit(size + 1)))
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            token = _paging.encode(
                _paging.Cursor(create_time=utc(last.create_time), id=last.id), _FILTER_KEY
            )
        return AuditPage([_to_proto(r) for r in rows], token)


def check_page_token(page_token: str) -> None:
    """INVALID_ARGUMENT now for a token that is not ours (before any database work)."""
    _paging.decode(page_token, _FILTER_KEY)
