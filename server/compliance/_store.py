"""Rule-set storage: the domain operations on the ``rule_sets`` table.

Plain synchronous code that knows nothing about gRPC; the facade runs it in the database
threads. Every write is one transaction carrying its domain event
(``rule_set.created/updated/deleted``) in the event outbox, and returns that event for the
caller to publish. Concurrent writers are serialised by an optimistic version check: a
write whose expected version moved on changes nothing (ABORTED).

Built-in sets (``core.compliance.BUILTIN_IDS``) are data in the code, never rows: they
are read from there, are listed first, and refuse every write with FAILED_PRECONDITION.
Their names are taken: a custom set cannot be called "Automotive SPICE 3.1".

Rule sets are organisation-wide reference data, not owned objects: every caller reaches
every set, and the role table alone decides who writes (Administrators and Project
Managers); ``owner_id`` records who created a set.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from agentic.compliance.v1 import rule_sets_pb2
from sqlalchemy import Engine, delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core import events
from core.compliance import BUILTIN_IDS, builtin_rule_sets, etag_of, load_rule_set, to_proto
from core.db import RuleSetRow
from core.rpc import Aborted, AlreadyExists, FailedPrecondition, NotFound
from server import paging as _paging
from server.compliance._wire import UPDATABLE_FIELDS, columns

DOMAIN = "agentic.compliance.v1"
DEFAULT_PAGE_SIZE = 50
# Every caller sees the same list; the key still binds tokens to this listing.
_FILTER_KEY = "rule_sets"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of rule sets and the token for the next one ("" when last)."""

    rule_sets: list[rule_sets_pb2.RuleSet]
    next_page_token: str


def rule_set_not_found(rule_set_id: str) -> NotFound:
    """The NOT_FOUND error for a rule-set id (also raised for cached negative reads)."""
    return NotFound(
        f"rule set {rule_set_id} not found",
        reason="RULE_SET_NOT_FOUND",
        domain=DOMAIN,
        metadata={"id": rule_set_id},
    )


def _read_only(rule_set_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"rule set {rule_set_id} is built in and read-only; create a custom rule set instead",
        reason="RULE_SET_BUILT_IN",
        domain=DOMAIN,
        metadata={"id": rule_set_id},
    )


def _name_taken(name: str) -> AlreadyExists:
    return AlreadyExists(
        f"a rule set named {name!r} exists already",
        reason="RULE_SET_NAME_TAKEN",
        domain=DOMAIN,
        metadata={"name": name[:200]},
    )


def _stale(rule_set_id: str) -> Aborted:
    return Aborted(
        f"rule set {rule_set_id} changed since the etag was read; read it again and retry",
        reason="ETAG_MISMATCH",
        domain=DOMAIN,
        metadata={"id": rule_set_id},
    )


def _builtin_names() -> frozenset[str]:
    return frozenset(r.name for r in builtin_rule_sets().values())


def _event(session: Session, event_type: events.EventType, rule_set_id: str) -> events.Outboxed:
    return events.add(session, events.DomainEvent(event_type, rule_set_id))


class RuleSetStore:
    """CRUD and listing of custom rule sets, and reads of built-in ones, on one engine."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create(
        self, rule_set: rule_sets_pb2.RuleSet, *, owner_id: str
    ) -> tuple[rule_sets_pb2.RuleSet, events.Outboxed]:
        """Insert a custom set from ``rule_set``'s name, description, processes and source.

        ALREADY_EXISTS when the name is taken (by a custom or a built-in set).
        """
        if rule_set.name in _builtin_names():
            raise _name_taken(rule_set.name)
        now = datetime.now(UTC)
        row = RuleSetRow(
            id=str(uuid.uuid4()),
            owner_id=owner_id,
            create_time=now,
            update_time=now,
            version=1,
            **columns(rule_set, UPDATABLE_FIELDS),
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
                session.flush()  # the unique name is checked here, before the event
                event = _event(session, events.EventType.RULE_SET_CREATED, row.id)
        except IntegrityError:
            raise _name_taken(rule_set.name) from None
        return to_proto(row), event

    def find(self, rule_set_id: str) -> rule_sets_pb2.RuleSet | None:
        """The rule set with this id, built-in (no database read) or custom; None if none."""
        with self._sessions() as session:
            return load_rule_set(session, rule_set_id)

    def get(self, rule_set_id: str) -> rule_sets_pb2.RuleSet:
        """The rule set with this id, built-in or custom; NOT_FOUND when there is none."""
        found = self.find(rule_set_id)
        if found is None:
            raise rule_set_not_found(rule_set_id)
        return found

    def list(self, *, page_size: int, page_token: str) -> Page:
        """A page: the built-in sets (by id) first, then custom ones in (create_time, id)."""
        size = page_size or DEFAULT_PAGE_SIZE
        cursor = _paging.decode(page_token, _FILTER_KEY)
        builtins = sorted(BUILTIN_IDS)
        # A cursor on a built-in id resumes after it, custom sets from their start.
        after_builtin = cursor is not None and cursor.id in BUILTIN_IDS
        if cursor is None or after_builtin:
            start = 0 if cursor is None else builtins.index(cursor.id) + 1
            picked = [builtin_rule_sets()[i] for i in builtins[start:]][: size + 1]
            found = [_copy(r) for r in picked]
            custom_cursor = None
        else:
            found = []
            custom_cursor = cursor
        if len(found) <= size:
            query = select(RuleSetRow)
            if custom_cursor is not None:
                query = query.where(
                    tuple_(RuleSetRow.create_time, RuleSetRow.id)
                    > (custom_cursor.create_time, custom_cursor.id)
                )
            # One extra row tells whether another page exists without a COUNT.
            query = query.order_by(RuleSetRow.create_time, RuleSetRow.id)
            query = query.limit(size + 1 - len(found))
            with self._sessions() as session:
                found += [to_proto(row) for row in session.scalars(query)]
        more = len(found) > size
        found = found[:size]
        token = ""
        if more:
            last = found[-1]
            when = last.create_time.ToDatetime(tzinfo=UTC)
            token = _paging.encode(_paging.Cursor(create_time=when, id=last.id), _FILTER_KEY)
        return Page(rule_sets=found, next_page_token=token)

    @staticmethod
    def check_page_token(page_token: str) -> None:
        """INVALID_ARGUMENT unless ``page_token`` is empty or one of ours."""
        _paging.decode(page_token, _FILTER_KEY)

    def update(
        self,
        rule_set_id: str,
        rule_set: rule_sets_pb2.RuleSet,
        fields: set[str],
        *,
        etag: str,
    ) -> tuple[rule_sets_pb2.RuleSet, events.Outboxed]:
        """Set ``fields`` (paths of UPDATABLE_FIELDS) from ``rule_set``; the version goes up.

        NOT_FOUND when absent, FAILED_PRECONDITION for a built-in set, ABORTED when
        ``etag`` is stale, ALREADY_EXISTS when the new name is taken.
        """
        values = columns(rule_set, fields)
        if "name" in fields and rule_set.name in _builtin_names():
            raise _name_taken(rule_set.name)
        try:
            with self._sessions.begin() as session:
                row = self._current(session, rule_set_id, etag)
                values["update_time"] = datetime.now(UTC)
                values["version"] = row.version + 1
                result = session.execute(
                    update(RuleSetRow)
                    .where(RuleSetRow.id == rule_set_id, RuleSetRow.version == row.version)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]  # Session.execute is typed Result; DML gives a CursorResult
                    # Another writer won between our read and our write.
                    raise _stale(rule_set_id)
                event = _event(session, events.EventType.RULE_SET_UPDATED, rule_set_id)
                session.expire(row)
                session.refresh(row)
                return to_proto(row), event
        except IntegrityError:
            raise _name_taken(rule_set.name) from None

    def delete(self, rule_set_id: str, *, etag: str) -> events.Outboxed:
        """Remove a custom set; NOT_FOUND, FAILED_PRECONDITION (built-in) or ABORTED."""
        with self._sessions.begin() as session:
            row = self._current(session, rule_set_id, etag)
            result = session.execute(
                delete(RuleSetRow)
                .where(RuleSetRow.id == rule_set_id, RuleSetRow.version == row.version)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]  # Session.execute is typed Result; DML gives a CursorResult
                raise _stale(rule_set_id)
            return _event(session, events.EventType.RULE_SET_DELETED, rule_set_id)

    @staticmethod
    def _current(session: Session, rule_set_id: str, etag: str) -> RuleSetRow:
        if rule_set_id in BUILTIN_IDS:
            raise _read_only(rule_set_id)
        row = session.get(RuleSetRow, rule_set_id)
        if row is None:
            raise rule_set_not_found(rule_set_id)
        if etag and etag != etag_of(row.id, row.version):
            raise _stale(rule_set_id)
        return row


def _copy(rule_set: rule_sets_pb2.RuleSet) -> rule_sets_pb2.RuleSet:
    copy = rule_sets_pb2.RuleSet()
    copy.CopyFrom(rule_set)
    return copy
