"""Database access: schema, engine and migrations."""

from server.db._engine import make_engine, migrate
from server.db._schema import Base, ProjectRow

__all__ = ["Base", "ProjectRow", "make_engine", "migrate"]
