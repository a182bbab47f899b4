"""Project storage: the domain operations on the relational database.

Plain synchronous code that knows nothing about gRPC; the servicer runs it in worker
threads. Every write is one transaction, so a failed call leaves nothing half-written.
Concurrent writers are serialised by an optimistic version check (``version`` column):
a write whose expected version moved on changes nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from server import paging as _paging
from server.db import ProjectRow
from server.rpc import Aborted, AlreadyExists, NotFound

DOMAIN = "agentic.projects.v1"
DEFAULT_PAGE_SIZE = 50
UPDATABLE_FIELDS = frozenset({"name", "description", "owner_id"})


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


@dataclass(frozen=True, slots=True)
class Page:
    """One page of projects and the token for the next one ("" when last)."""

    projects: list[Project]
    next_page_token: str


def _filter_key(owner_id: str) -> str:
    return f"owner_id={owner_id}"


def etag_of(project_id: str, version: int) -> str:
    """Opaque etag: clients compare it, never parse it."""
    return hashlib.sha256(f"{project_id}:{version}".encode()).hexdigest()[:20]


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _to_project(row: ProjectRow) -> Project:
    return Project(
        id=row.id,
        name=row.name,
        description=row.description,
        owner_id=row.owner_id,
        create_time=_utc(row.create_time),
        update_time=_utc(row.update_time),
        etag=etag_of(row.id, row.version),
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


class ProjectStore:
    """CRUD and listing of projects on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create(self, *, name: str, description: str, owner_id: str) -> Project:
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
        except IntegrityError:
            raise _name_taken(owner_id, name) from None
        return _to_project(row)

    def get(self, project_id: str) -> Project:
        """The project with this id; NOT_FOUND otherwise."""
        with self._sessions() as session:
            row = session.get(ProjectRow, project_id)
            if row is None:
                raise project_not_found(project_id)
            return _to_project(row)

    def list(self, *, page_size: int, page_token: str, owner_id: str) -> Page:
        """A page in (create_time, id) order, optionally only one owner's projects."""
        size = page_size or DEFAULT_PAGE_SIZE
        filter_key = _filter_key(owner_id)
        cursor = _paging.decode(page_token, filter_key)
        query = select(ProjectRow)
        if owner_id:
            query = query.where(ProjectRow.owner_id == owner_id)
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
        token = ""
        if more:
            last = rows[-1]
            token = _paging.encode(
                _paging.Cursor(create_time=_utc(last.create_time), id=last.id), filter_key
            )
        return Page(projects=[_to_project(r) for r in rows], next_page_token=token)

    @staticmethod
    def check_page_token(page_token: str, *, owner_id: str) -> None:
        """INVALID_ARGUMENT unless ``page_token`` is empty or ours for this filter."""
        _paging.decode(page_token, _filter_key(owner_id))

    def update(self, project_id: str, fields: dict[str, str], *, etag: str) -> Project:
        """Set ``fields`` (a subset of UPDATABLE_FIELDS); ABORTED when ``etag`` is stale."""
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:  # the proto rules already refuse these; this guards direct callers
            raise ValueError(f"not updatable: {sorted(unknown)}")
        try:
            with self._sessions.begin() as session:
                row = self._current(session, project_id, etag)
                values: dict[str, object] = dict(fields)
                values["update_time"] = datetime.now(UTC)
                values["version"] = row.version + 1
                result = session.execute(
                    update(ProjectRow)
                    .where(ProjectRow.id == project_id, ProjectRow.version == row.version)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    # Another writer won between our read and our write.
                    raise _stale(project_id)
                session.expire(row)
                session.refresh(row)
                return _to_project(row)
        except IntegrityError:
            owner = fields.get("owner_id") or self.get(project_id).owner_id
            raise _name_taken(owner, fields.get("name", "")) from None

    def delete(self, project_id: str, *, etag: str) -> None:
        """Remove the project; NOT_FOUND when absent, ABORTED when ``etag`` is stale."""
        with self._sessions.begin() as session:
            row = self._current(session, project_id, etag)
            result = session.execute(
                delete(ProjectRow)
                .where(ProjectRow.id == project_id, ProjectRow.version == row.version)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise _stale(project_id)

    @staticmethod
    def _current(session: Session, project_id: str, etag: str) -> ProjectRow:
        row = session.get(ProjectRow, project_id)
        if row is None:
            raise project_not_found(project_id)
        if etag and etag != etag_of(row.id, row.version):
            raise _stale(project_id)
        return row
