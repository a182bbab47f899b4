"""``projects`` (+ ``project_members``) rows -> ``agentic.projects.v1.Project``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from agentic.projects.v1 import projects_pb2
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.db import ProjectMemberRow, ProjectRow, utc


def etag_of(project_id: str, version: int) -> str:
    """Opaque etag: clients compare it, never parse it."""
    return hashlib.sha256(f"{project_id}:{version}".encode()).hexdigest()[:20]


def members_of(session: Session, project_ids: Sequence[str]) -> dict[str, list[str]]:
    """The member ids of each of ``project_ids`` (an empty list for none), one query."""
    found: dict[str, list[str]] = {pid: [] for pid in project_ids}
    if project_ids:
        rows = session.execute(
            select(ProjectMemberRow.project_id, ProjectMemberRow.member_id).where(
                ProjectMemberRow.project_id.in_(project_ids)
            )
        )
        for project_id, member_id in rows:
            found[project_id].append(member_id)
    return found


def project_proto(row: ProjectRow, member_ids: Iterable[str] = ()) -> projects_pb2.Project:
    """The API message of a project row (members sorted, times in UTC)."""
    project = projects_pb2.Project(
        id=row.id,
        name=row.name,
        description=row.description,
        owner_id=row.owner_id,
        etag=etag_of(row.id, row.version),
        member_ids=sorted(member_ids),
    )
    project.create_time.FromDatetime(utc(row.create_time))
    project.update_time.FromDatetime(utc(row.update_time))
    return project


def load_project(
    engine_or_session: Engine | Session, project_id: str
) -> projects_pb2.Project | None:
    """The project with this id, whoever may see it (callers check reach); None if none.

    Database errors propagate (the server maps them to UNAVAILABLE, a worker to
    TransientError).
    """
    if isinstance(engine_or_session, Session):
        return _load(engine_or_session, project_id)
    with Session(engine_or_session) as session:
        return _load(session, project_id)


def _load(session: Session, project_id: str) -> projects_pb2.Project | None:
    row = session.get(ProjectRow, project_id)
    if row is None:
        return None
    return project_proto(row, members_of(session, [project_id])[project_id])
