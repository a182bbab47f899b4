"""Database statements inherit the deadline of the RPC they serve (PostgreSQL).

When the incoming call carries a deadline, each transaction begins with
``SET LOCAL statement_timeout`` of the time left, so a statement stuck behind a lock or a
slow plan is cancelled by PostgreSQL once nobody waits for its answer any more, instead
of holding a pooled connection (and its locks) long after the client gave up. The
deadline travels in a context variable; the facades copy the context into the database
threads. SQLite has no statement timeout; its busy timeout bounds lock waits instead.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event

from core.deadline import deadline_remaining

__all__ = ["install_statement_deadlines"]

# Never ask for less than this: a 0 ms statement_timeout means "no timeout" to PostgreSQL.
_MIN_TIMEOUT_MS = 1


def install_statement_deadlines(engine: Engine) -> None:
    """Make every PostgreSQL transaction on ``engine`` honour the caller's deadline."""
    if engine.dialect.name != "postgresql":
        return

    def begin(connection: Any) -> None:
        remaining = deadline_remaining()
        if remaining is None:
            return  # no deadline (background work, or a client that set none)
        millis = max(_MIN_TIMEOUT_MS, int(remaining * 1000))
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {millis}")

    event.listen(engine, "begin", begin)
