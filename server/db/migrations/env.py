"""Alembic environment: runs on the connection handed over by server.db.migrate."""

from __future__ import annotations

from alembic import context

from server.db._schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations through server.db.migrate (or `python -m server.db`)")
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
