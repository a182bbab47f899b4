"""Alembic migrations produce exactly the schema the SQLAlchemy models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from core.db import Base, make_engine, migrate


def test_migrations_match_models_and_are_idempotent(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        migrate(engine)
        migrate(engine)  # a second run at head is a no-op
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == [], f"models and migrations disagree: {diff}"
            assert "projects" in inspect(conn).get_table_names()
    finally:
        engine.dispose()
