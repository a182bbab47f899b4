"""What counts against the artifact limits, and the lock that makes checking them and
inserting an upload one step.

Two limits are checked when an upload is created: the bytes a project holds (its quota)
and the unfinished uploads of one principal (across all projects). Counting, then
inserting, is a race: two CreateUploads that count at the same time both see room for one
more and both insert. ``lock_for_create`` closes it by making the creates that could
overtake each other wait for one another, inside the transaction that counts and inserts,
so each one counts what the one before it committed:

- PostgreSQL: a transaction-scoped advisory lock on the principal (their uploads may be
  in any project), then the project's row ``FOR NO KEY UPDATE`` (it conflicts with itself,
  so creates in one project queue, but not with the ``KEY SHARE`` lock that an insert
  referencing the project takes, so tasks and other rows are not held up). Both locks
  are taken in that order by every create, so two creates never wait for each other in
  a cycle, and both end with the transaction. Under READ COMMITTED each later statement
  sees what was committed before the locks were granted.
- SQLite: ``BEGIN IMMEDIATE`` takes the database's one write lock before the counts
  (the default, a deferred BEGIN issued by the driver before the first INSERT, counts
  outside any lock); the busy timeout of ``core.db`` turns a held lock into a wait.
"""

from __future__ import annotations

from sqlalchemy import case, func, select, text
from sqlalchemy.orm import Session

from core.artifacts import READY, UPLOADING
from core.db import ArtifactRow, ProjectRow

__all__ = ["READY", "UPLOADING", "lock_for_create", "open_uploads", "usage"]

# The first key of the advisory locks this module takes (pg_advisory_xact_lock(int, int)),
# so that they never collide with another use of advisory locks on the same database.
# Its four bytes are "ARTF" in ASCII.
_OWNER_LOCK_SPACE = 0x41525446


def lock_for_create(session: Session, *, project_id: str, owner_id: str) -> None:
    """Wait until no other create of the project's or the principal's is between its
    counts and its commit; held until ``session``'s transaction ends.

    Must be the transaction's first statement (on SQLite it begins the transaction).
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:space, hashtext(:owner))"),
            {"space": _OWNER_LOCK_SPACE, "owner": owner_id},
        )
        session.execute(
            select(ProjectRow.id).where(ProjectRow.id == project_id).with_for_update(key_share=True)
        )
    elif dialect == "sqlite":
        connection = session.connection()
        # The driver (pysqlite, legacy transaction control) opens a deferred transaction
        # only before a write; with one already open this BEGIN would fail loudly.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:  # pragma: no cover - core.db makes only these two kinds of engine
        raise RuntimeError(f"no create lock for the {dialect} dialect")


def open_uploads(session: Session, owner_id: str) -> int:
    """Unfinished uploads of ``owner_id``, in every project."""
    count = session.scalar(
        select(func.count())
        .select_from(ArtifactRow)
        .where(ArtifactRow.owner_id == owner_id, ArtifactRow.state == UPLOADING)
    )
    return int(count or 0)


def usage(session: Session, project_id: str) -> int:
    """Artifact bytes the project holds: ready sizes plus open uploads' declared or
    committed sizes (whichever is larger)."""
    declared = func.coalesce(ArtifactRow.declared_size, 0)
    held = case(
        (ArtifactRow.state == READY, ArtifactRow.size_bytes),
        (ArtifactRow.committed_size > declared, ArtifactRow.committed_size),
        else_=declared,
    )
    total = session.scalar(
        select(func.coalesce(func.sum(held), 0)).where(
            ArtifactRow.project_id == project_id,
            ArtifactRow.state.in_((READY, UPLOADING)),
        )
    )
    return int(total or 0)
