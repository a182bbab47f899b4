"""Project storage: the domain operations on the relational database.

Plain synchronous code that knows nothing about gRPC; the servicer runs it in worker
threads. Every write is one transaction, so a failed call leaves nothing half-written.
Concurrent writers are serialised by an optimistic version check (``version`` column):
a write whose expected version moved on changes nothing. Each write also puts its domain
event (``project.created/updated/deleted``) into the event outbox in the same
transaction, and returns it for the caller to publish: a committed change always
carries its cache invalidation to the other replicas.

Object-level access (OWASP API1): every operation that names a project takes a
``viewer``, the principal id it acts for, or None for one who reaches everything (an
Administrator). A project the viewer neither owns nor is a member of is NOT_FOUND, the
same answer as for an id that does not exist, so its existence never leaks. Changing the
owner or the members, and deleting, are for the owner (or an Administrator) alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from agentic.projects.v1 import projects_pb2
from sqlalchemy import ColumnElement, Engine, delete, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core import events
from core.db import ProjectMemberRow, ProjectRow, utc
from core.projects import etag_of, load_project, members_of
from core.rpc import Aborted, AlreadyExists, NotFound, PermissionDenied
from server import paging as _paging

DOMAIN = "agentic.projects.v1"
DEFAULT_PAGE_SIZE = 50
UPDATABLE_FIELDS = frozenset({"name", "description", "owner_id", "member_ids"})
# Who may see a project is decided by these: only its owner may change them.
_OWNER_ONLY_FIELDS = frozenset({"owner_id", "member_ids"})


@dataclass(frozen=True, slots=True)
class Project:
    """A project as stored, with its etag derived from id and version."""

    id: str
    name: str
    description: str
    owner_id: str
    create_time: datetime
    update_time: datetime
    etag: str
    member_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Page:
    """One page of projects and the token for the next one ("" when last)."""

    projects: list[Project]
    next_page_token: str


def _filter_key(owner_id: str, viewer: str | None) -> str:
    # The viewer is part of the filter: a page token is only good for the principal
    # whose listing produced it.
    return f"owner_id={owner_id};viewer={'*' if viewer is None else viewer}"


def reaches(viewer: str | None, owner_id: str, member_ids: Iterable[str]) -> bool:
    """Whether ``viewer`` (None: an Administrator) may see a project of this owner and
    these members; ``reach_condition`` is the same rule in SQL."""
    return viewer is None or viewer == owner_id or viewer in member_ids


def reach_condition(viewer: str) -> ColumnElement[bool]:
    """SQL: the project row is owned by ``viewer`` or has ``viewer`` as a member."""
    return or_(
        ProjectRow.owner_id == viewer,
        ProjectRow.id.in_(
            select(ProjectMemberRow.project_id).where(ProjectMemberRow.member_id == viewer)
        ),
    )


def _to_project(row: ProjectRow, member_ids: Iterable[str] = ()) -> Project:
    return Project(
        id=row.id,
        name=row.name,
        description=row.description,
        owner_id=row.owner_id,
        create_time=utc(row.create_time),
        update_time=utc(row.update_time),
        etag=etag_of(row.id, row.version),
        member_ids=tuple(sorted(member_ids)),
    )


def _set_members(session: Session, project_id: str, member_ids: Iterable[str]) -> None:
    session.execute(delete(ProjectMemberRow).where(ProjectMemberRow.project_id == project_id))
    rows = [{"project_id": project_id, "member_id": m} for m in sorted(set(member_ids))]
    if rows:
        session.execute(insert(ProjectMemberRow), rows)


def _owner_only(project_id: str) -> PermissionDenied:
    return PermissionDenied(
        "only the project's owner or an Administrator may do this",
        reason="NOT_PROJECT_OWNER",
        domain=DOMAIN,
        metadata={"id": project_id},
    )


def project_not_found(project_id: str) -> NotFound:
    """The NOT_FOUND error for a project id (also raised for cached negative reads)."""
    return NotFound(
        f"project {project_id} not found",
        reason="PROJECT_NOT_FOUND",
        domain=DOMAIN,
        metadata={"id": project_id},
    )


def _name_taken(owner_id: str, name: str) -> AlreadyExists:
    return AlreadyExists(
        f"owner {owner_id} already has a project named {name!r}",
        reason="PROJECT_NAME_TAKEN",
        domain=DOMAIN,
        metadata={"owner_id": owner_id},
    )


def _stale(project_id: str) -> Aborted:
    return Aborted(
        f"project {project_id} changed since the etag was read; read it again and retry",
        reason="ETAG_MISMATCH",
        domain=DOMAIN,
        metadata={"id": project_id},
    )


def _event(session: Session, event_type: events.EventType, project_id: str) -> events.Outboxed:
    return events.add(session, events.DomainEvent(event_type, project_id))


class ProjectStore:
    """CRUD and listing of projects on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create(
        self, *, name: str, description: str, owner_id: str, member_ids: Sequence[str] = ()
    ) -> tuple[Project, events.Outboxed]:
        """Insert a new project; ALREADY_EXISTS when the owner has one of that name."""
        now = datetime.now(UTC)
        row = ProjectRow(
            id=str(uuid.uuid4()),
            name=name,
            description=description,
            owner_id=owner_id,
            create_time=now,
            update_time=now,
            version=1,
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
                session.flush()  # the project row exists before its members reference it
                _set_members(session, row.id, member_ids)
                event = _event(session, events.EventType.PROJECT_CREATED, row.id)
        except IntegrityError:
            raise _name_taken(owner_id, name) from None
        return _to_project(row, member_ids), event

    def get(self, project_id: str) -> Project:
        """The project with this id, whoever may see it (callers check ``reaches``)."""
        with self._sessions() as session:
            row = session.get(ProjectRow, project_id)
            if row is None:
                raise project_not_found(project_id)
            return _to_project(row, members_of(session, [project_id])[project_id])

    def load(self, project_id: str) -> projects_pb2.Project | None:
        """The wire form of the project with this id (None: none), whoever may see it:
        the cache's origin, ``core.projects.load_project``, which the cache warming
        worker reads too, so both cache the same bytes."""
        with self._sessions() as session:
            return load_project(session, project_id)

    def list(
        self, *, page_size: int, page_token: str, owner_id: str, viewer: str | None = None
    ) -> Page:
        """A page in (create_time, id) order of the projects ``viewer`` reaches.

        ``owner_id`` narrows it to one owner's projects.
        """
        size = page_size or DEFAULT_PAGE_SIZE
        filter_key = _filter_key(owner_id, viewer)
        cursor = _paging.decode(page_token, filter_key)
        query = select(ProjectRow)
        if owner_id:
            query = query.where(ProjectRow.owner_id == owner_id)
        if viewer is not None:
            query = query.where(reach_condition(viewer))
        if cursor is not None:
            query = query.where(
                tuple_(ProjectRow.create_time, ProjectRow.id) > (cursor.create_time, cursor.id)
            )
        # One extra row tells whether another page exists without a COUNT.
        query = query.order_by(ProjectRow.create_time, ProjectRow.id).limit(size + 1)
        with self._sessions() as session:
            rows = list(session.scalars(query))
            more = len(rows) > size
            rows = rows[:size]
            members = members_of(session, [r.id for r in rows])
        token = ""
        if more:
            last = rows[-1]
            token = _paging.encode(
                _paging.Cursor(create_time=utc(last.create_time), id=last.id), filter_key
            )
        return Page(projects=[_to_project(r, members[r.id]) for r in rows], next_page_token=token)

    @staticmethod
    def check_page_token(page_token: str, *, owner_id: str, viewer: str | None = None) -> None:
        """INVALID_ARGUMENT unless ``page_token`` is empty or ours for this filter."""
        _paging.decode(page_token, _filter_key(owner_id, viewer))

    def update(
        self,
        project_id: str,
        fields: dict[str, str],
        *,
        etag: str,
        member_ids: Sequence[str] | None = None,
        viewer: str | None = None,
    ) -> tuple[Project, events.Outboxed]:
        """Set ``fields`` (a subset of UPDATABLE_FIELDS) and, when given, the member list.

        NOT_FOUND unless ``viewer`` reaches the project; PERMISSION_DENIED when a
        non-owner changes the owner or the members; ABORTED when ``etag`` is stale.
        """
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:  # the proto rules already refuse these; this guards direct callers
            raise ValueError(f"not updatable: {sorted(unknown)}")
        try:
            with self._sessions.begin() as session:
                row = self._current(session, project_id, etag, viewer)
                changes_access = member_ids is not None or bool(_OWNER_ONLY_FIELDS & set(fields))
                if changes_access and viewer is not None and row.owner_id != viewer:
                    raise _owner_only(project_id)
                values: dict[str, object] = dict(fields)
                values["update_time"] = datetime.now(UTC)
                values["version"] = row.version + 1
                result = session.execute(
                    update(ProjectRow)
                    .where(ProjectRow.id == project_id, ProjectRow.version == row.version)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]  # Session.execute is typed Result; DML gives a CursorResult
                    # Another writer won between our read and our write.
                    raise _stale(project_id)
                if member_ids is not None:
                    _set_members(session, project_id, member_ids)
                event = _event(session, events.EventType.PROJECT_UPDATED, project_id)
                session.expire(row)
                session.refresh(row)
                return _to_project(row, members_of(session, [project_id])[project_id]), event
        except IntegrityError:
            owner = fields.get("owner_id") or self.get(project_id).owner_id
            raise _name_taken(owner, fields.get("name", "")) from None

    def delete(self, project_id: str, *, etag: str, viewer: str | None = None) -> events.Outboxed:
        """Remove the project; NOT_FOUND when absent or out of reach, ABORTED when stale.

        Only the owner (or an Administrator) may delete: members get PERMISSION_DENIED.
        """
        with self._sessions.begin() as session:
            row = self._current(session, project_id, etag, viewer)
            if viewer is not None and row.owner_id != viewer:
                raise _owner_only(project_id)
            # Explicit rather than ON DELETE CASCADE: SQLite enforces foreign keys only
            # when a pragma is set, and this keeps both backends alike.
            session.execute(
                delete(ProjectMemberRow).where(ProjectMemberRow.project_id == project_id)
            )
            result = session.execute(
                delete(ProjectRow)
                .where(ProjectRow.id == project_id, ProjectRow.version == row.version)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]  # Session.execute is typed Result; DML gives a CursorResult
                raise _stale(project_id)
            return _event(session, events.EventType.PROJECT_DELETED, project_id)

    @staticmethod
    def _current(session: Session, project_id: str, etag: str, viewer: str | None) -> ProjectRow:
        row = session.get(ProjectRow, project_id)
        if row is None:
            raise project_not_found(project_id)
        if viewer is not None and row.owner_id != viewer:
            is_member = session.get(ProjectMemberRow, (project_id, viewer)) is not None
            if not is_member:
                raise project_not_found(project_id)  # the same answer as a missing id
        # Reach is checked before the etag: a stale etag must not confirm existence.
        if etag and etag != etag_of(row.id, row.version):
            raise _stale(project_id)
        return row
