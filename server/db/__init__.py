"""Database access: schema, engine and migrations."""

from server.db._calls import in_database_thread
from server.db._deadline import install_statement_deadlines
from server.db._engine import make_engine, migrate
from server.db._schema import (
    Base,
    EventOutboxRow,
    ProjectMemberRow,
    ProjectRow,
    TaskEventRow,
    TaskOutboxRow,
    TaskRow,
)

__all__ = [
    "Base",
    "EventOutboxRow",
    "ProjectMemberRow",
    "ProjectRow",
    "TaskEventRow",
    "TaskOutboxRow",
    "TaskRow",
    "in_database_thread",
    "install_statement_deadlines",
    "make_engine",
    "migrate",
]
