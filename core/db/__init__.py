"""Database access: schema, engine and migrations."""

from core.db._calls import in_database_thread
from core.db._deadline import install_statement_deadlines
from core.db._engine import make_engine, migrate
from core.db._schema import (
    ArtifactRow,
    ArtifactWorkProductRow,
    AuditEventRow,
    Base,
    EventOutboxRow,
    ProjectMemberRow,
    ProjectRow,
    RuleSetRow,
    SchedulerLeaseRow,
    SessionRevocationRow,
    TaskEventRow,
    TaskOutboxRow,
    TaskRow,
)
from core.db._times import utc

__all__ = [
    "ArtifactRow",
    "ArtifactWorkProductRow",
    "AuditEventRow",
    "Base",
    "EventOutboxRow",
    "ProjectMemberRow",
    "ProjectRow",
    "RuleSetRow",
    "SchedulerLeaseRow",
    "SessionRevocationRow",
    "TaskEventRow",
    "TaskOutboxRow",
    "TaskRow",
    "in_database_thread",
    "install_statement_deadlines",
    "make_engine",
    "migrate",
    "utc",
]
