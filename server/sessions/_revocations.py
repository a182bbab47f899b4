"""Revoked sessions: the rows of ``session_revocations`` and every server's copy in memory.

Two kinds of revocation, one row each:

* a session (``session_id`` set): the caller's own logout; every token of that subject
  carrying that ``sid`` is refused;
* every session of a subject issued before a time (``session_id`` empty): an
  Administrator's; every token of that subject whose ``iat`` is earlier is refused,
  whatever its ``sid``, session-less service tokens included.

``RevocationList`` is what a call is checked against: dictionary lookups, no I/O, so a
revocation holds while the cache (or the database) is down. ``RevocationStore`` reads
and writes the table (blocking, on a database thread).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Engine, Table, insert, select
from sqlalchemy.orm import Session, sessionmaker

from core import events
from core.db import SessionRevocationRow, utc
from server.auth import Principal

__all__ = ["Revocation", "RevocationList", "RevocationStore"]

_TABLE = cast(Table, SessionRevocationRow.__table__)


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revocation; times are Unix seconds."""

    id: str
    subject: str
    session_id: str
    """The revoked session; empty: every session of ``subject`` issued before
    ``issued_before``."""
    issued_before: float | None
    revoke_time: float
    forget_at: float
    """When no token this revocation refuses can still be valid: it is dropped then."""
    revoked_by: str

    @classmethod
    def new(
        cls,
        *,
        subject: str,
        session_id: str = "",
        issued_before: float | None = None,
        now: float,
        forget_at: float,
        revoked_by: str,
    ) -> Revocation:
        """A revocation made now, with a fresh id."""
        return cls(
            id=str(uuid.uuid4()),
            subject=subject,
            session_id=session_id,
            issued_before=issued_before,
            revoke_time=now,
            forget_at=forget_at,
            revoked_by=revoked_by,
        )


class RevocationList:
    """The revocations a server knows of, indexed for the check of every call.

    Only touched from the event loop (the poller hands rows over there), so it needs no
    lock. Bounded by what is revoked within the retention time: revocations are rare
    (a logout each), and every one is dropped at its ``forget_at``.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, Revocation] = {}
        self._sessions: dict[tuple[str, str], float] = {}  # (subject, sid) -> forget_at
        self._subjects: dict[str, dict[str, Revocation]] = {}  # subject -> id -> revocation

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, revocation: Revocation) -> bool:
        """Remember ``revocation``; False when it was known already."""
        if revocation.id in self._by_id:
            return False
        self._by_id[revocation.id] = revocation
        if revocation.session_id:
            key = (revocation.subject, revocation.session_id)
            self._sessions[key] = max(self._sessions.get(key, 0.0), revocation.forget_at)
        else:
            self._subjects.setdefault(revocation.subject, {})[revocation.id] = revocation
        return True

    def add_all(self, revocations: Iterable[Revocation]) -> int:
        """Remember each of ``revocations``; how many were new."""
        return sum(self.add(revocation) for revocation in revocations)

    def refuses(self, principal: Principal) -> bool:
        """Whether a revocation covers ``principal``'s token."""
        if (
            principal.session_id is not None
            and (principal.subject, principal.session_id) in self._sessions
        ):
            return True
        cutoffs = self._subjects.get(principal.subject)
        if not cutoffs:
            return False
        issued_at = principal.issued_at
        return any(
            r.issued_before is None or issued_at is None or issued_at < r.issued_before
            for r in cutoffs.values()
        )

    def prune(self, now: float) -> int:
        """Drop the revocations whose ``forget_at`` has passed; how many."""
        gone = [r for r in self._by_id.values() if r.forget_at <= now]
        for revocation in gone:
            del self._by_id[revocation.id]
            if revocation.session_id:
                key = (revocation.subject, revocation.session_id)
                if self._sessions.get(key, 0.0) <= now:
                    self._sessions.pop(key, None)
            else:
                by_subject = self._subjects.get(revocation.subject, {})
                by_subject.pop(revocation.id, None)
                if not by_subject:
                    self._subjects.pop(revocation.subject, None)
        return len(gone)


def _timestamp(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _revocation(row: SessionRevocationRow) -> Revocation:
    return Revocation(
        id=row.id,
        subject=row.subject,
        session_id=row.session_id,
        issued_before=None if row.issued_before is None else utc(row.issued_before).timestamp(),
        revoke_time=utc(row.create_time).timestamp(),
        forget_at=utc(row.forget_time).timestamp(),
        revoked_by=row.revoked_by,
    )


class RevocationStore:
    """``session_revocations`` on one engine (blocking)."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def add(self, revocation: Revocation) -> events.Outboxed:
        """Write ``revocation`` and its domain event in one transaction; the outboxed event
        (for the relay's fast path)."""
        with self._sessions.begin() as session:
            session.execute(
                insert(_TABLE),
                {
                    "id": revocation.id,
                    "create_time": _timestamp(revocation.revoke_time),
                    "subject": revocation.subject,
                    "session_id": revocation.session_id,
                    "issued_before": None
                    if revocation.issued_before is None
                    else _timestamp(revocation.issued_before),
                    "forget_time": _timestamp(revocation.forget_at),
                    "revoked_by": revocation.revoked_by,
                },
            )
            return _event(session, revocation)

    def live(self, now: float) -> list[Revocation]:
        """Every revocation not yet to be forgotten at ``now`` (a server's start)."""
        with self._sessions() as session:
            rows = session.scalars(
                select(SessionRevocationRow).where(
                    SessionRevocationRow.forget_time > _timestamp(now)
                )
            )
            return [_revocation(row) for row in rows]

    def created_since(self, since: float) -> list[Revocation]:
        """The revocations created at or after ``since`` (the poller's read)."""
        with self._sessions() as session:
            rows = session.scalars(
                select(SessionRevocationRow).where(
                    SessionRevocationRow.create_time >= _timestamp(since)
                )
            )
            return [_revocation(row) for row in rows]


def _event(session: Session, revocation: Revocation) -> events.Outboxed:
    event = events.DomainEvent(events.EventType.SESSION_REVOCATION_CREATED, revocation.id)
    return events.add(session, event)
