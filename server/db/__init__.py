"""Database access: schema, engine and migrations."""

from server.db._engine import make_engine, migrate
from server.db._schema import Base, ProjectRow, TaskEventRow, TaskOutboxRow, TaskRow

__all__ = [
    "Base",
    "ProjectRow",
    "TaskEventRow",
    "TaskOutboxRow",
    "TaskRow",
    "make_engine",
    "migrate",
]
