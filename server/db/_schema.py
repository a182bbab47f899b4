"""The relational schema, as SQLAlchemy 2 typed mappings.

Alembic migrations under ``server/db/migrations`` are the authority for the live schema;
these mappings must match the newest migration (a test compares them).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every table."""


class ProjectRow(Base):
    """One project. ``version`` increments on every write and is the source of the etag."""

    __tablename__ = "projects"
    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_projects_owner_name"),
        # Keyset pagination walks (create_time, id); with an owner filter, (owner_id, ...).
        Index("ix_projects_create_time_id", "create_time", "id"),
        Index("ix_projects_owner_create_time_id", "owner_id", "create_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    owner_id: Mapped[str] = mapped_column(String(128), nullable=False)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
