"""Engine construction and schema migration for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).parent / "migrations"

# A pooled PostgreSQL connection first handed out this long ago is pinged before it is
# handed out again. A busy pool hands connections out again within milliseconds and pays
# nothing; one that sat in the pool, or was held idle by a thread (see
# core.tasks._attempts), through a database restart is replaced before a caller uses it.
IDLE_PING_SECONDS = 10.0
_LEASE_TIME = "agentic_lease_time"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout turns lock contention
    # between the server's threads into a short wait instead of "database is locked".
    cursor = dbapi_connection.cursor()
    # busy_timeout first: a new connection opened while another holds the write lock then
    # waits for it instead of failing its own journal_mode pragma at once.
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _ping_after_idle(engine: Engine) -> None:
    """Ping a connection on checkout only when its previous checkout is IDLE_PING_SECONDS
    old (or more).

    ``pool_pre_ping`` pings on every checkout: one extra round trip per transaction. A
    connection that broke while in use is caught anyway: SQLAlchemy recognises the
    disconnect error, invalidates every older pooled connection, and the caller's call
    fails (the API maps it to UNAVAILABLE). The previous checkout, not the last checkin,
    starts the clock: the pool cannot see how long a holder left a connection unused.
    """
    dialect = engine.dialect

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        now = time.monotonic()
        since = record.info.get(_LEASE_TIME)
        if since is not None and now - since >= IDLE_PING_SECONDS:
            try:
                dialect.do_ping(dbapi_connection)
            except Exception as error:
                if dialect.is_disconnect(error, dbapi_connection, None):  # type: ignore[arg-type]  # wants the DBAPI Error type; any exception may be one
                    # The pool discards this connection and checks out (or opens) another.
                    raise exc.DisconnectionError() from error
                raise
        record.info[_LEASE_TIME] = now

    event.listen(engine, "checkout", checkout)


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    """Create an engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False},
            pool_size=pool_size,
            max_overflow=0,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
    engine = create_engine(parsed, pool_size=pool_size, max_overflow=0)
    _ping_after_idle(engine)
    return engine


def migrate(engine: Engine) -> None:
    """Bring the database schema to the newest migration (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
