"""Alembic environment: runs on the connection handed over by core.db.migrate."""

from __future__ import annotations

from alembic import context

from core.db._schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations through core.db.migrate (or `python -m core.db`)")
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
