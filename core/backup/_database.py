"""The database half of a backup: dump, check and restore, for SQLite and PostgreSQL.

SQLite is copied with its online backup API (``sqlite3.Connection.backup``): one
consistent snapshot while the server keeps writing (in WAL mode a reader blocks no
writer). PostgreSQL is dumped with ``pg_dump -Fc`` (one snapshot, taken in a repeatable
read transaction) and restored with ``pg_restore``; both must be on PATH (Debian's
``postgresql-client``, which ``make system-deps`` and the image install).

A restore first drops every table of the target and then loads the dump; the caller
has already checked the dump (checksum, ``PRAGMA integrity_check`` or ``pg_restore
--list``), so a corrupt backup never gets as far as touching the target.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, inspect, select, table, text
from sqlalchemy.engine import URL, make_url

import core.db.migrations
from core.db import make_engine

__all__ = [
    "DatabaseError",
    "backend_of",
    "check_dump",
    "current_revision",
    "dump",
    "head_revision",
    "is_empty",
    "known_revisions",
    "restore",
]

SQLITE_FILE = "database.sqlite3"
POSTGRESQL_FILE = "database.pgdump"
_VERSION_TABLE = "alembic_version"
# pg_dump of a production database takes minutes; a hung one must not hang a scheduled job
# for ever.
_TOOL_TIMEOUT_SECONDS = 6 * 3600


class DatabaseError(Exception):
    """A dump, check or restore failed; the message says which and why."""


def backend_of(url: str) -> str:
    """``sqlite`` or ``postgresql``; DatabaseError for anything else."""
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(f"backups cover SQLite and PostgreSQL, not {backend}")
    return backend


def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(Path(core.db.migrations.__file__).parent))


def head_revision() -> str:
    """The newest schema revision this code knows (the migrations' head)."""
    head = _scripts().get_current_head()
    assert head is not None, "the migrations have no head"
    return head


def known_revisions() -> set[str]:
    """Every schema revision this code can migrate from."""
    return {script.revision for script in _scripts().walk_revisions()}


def current_revision(engine: Engine) -> str:
    """The database's ``alembic_version`` (empty when it has none)."""
    if not inspect(engine).has_table(_VERSION_TABLE):
        return ""
    with engine.connect() as conn:
        value = conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalar()
    return "" if value is None else str(value)


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise DatabaseError(f"a SQLite backup needs a database file, not {url}")
    return Path(database)


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """``url`` as libpq reads it, and the environment that carries its password (a password
    on the command line would be visible to every user of the host)."""
    parsed: URL = make_url(url)
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    tool = shutil.which(argv[0])
    if tool is None:
        raise DatabaseError(
            f"{argv[0]} is not on PATH: install Debian's postgresql-client (make system-deps)"
        )
    try:
        done = subprocess.run(
            [tool, *argv[1:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DatabaseError(f"{argv[0]} took longer than {_TOOL_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        raise DatabaseError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def dump(url: str, directory: Path) -> tuple[str, str]:
    """Dump the database into ``directory``: the file's name and the dumped schema revision."""
    if backend_of(url) == "sqlite":
        source_path = _sqlite_path(url)
        if not source_path.exists():
            raise DatabaseError(f"no SQLite database at {source_path}")
        target = directory / SQLITE_FILE
        # Read-only: a backup must never create or change the database it copies.
        source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            copy = sqlite3.connect(target)
            try:
                # One step (pages=-1): the copy is one snapshot; with WAL the server's
                # writers go on meanwhile.
                source.backup(copy)
                # The copy inherits the source's WAL mode; as a rollback-journal database it
                # is one self-contained file, so checking it (read-only) leaves no -wal and
                # -shm files beside it. The server turns WAL back on when it opens a restore.
                copy.execute("PRAGMA journal_mode=DELETE")
                row = copy.execute(f"SELECT version_num FROM {_VERSION_TABLE}").fetchone()
            except sqlite3.Error as exc:
                raise DatabaseError(f"copying {source_path}: {exc}") from exc
            finally:
                copy.close()
        finally:
            source.close()
        return SQLITE_FILE, "" if row is None else str(row[0])
    libpq, env = _libpq(url)
    engine = make_engine(url, pool_size=1)
    try:
        # Read before the dump: a migration between the two is an upgrade an operator runs
        # with the servers stopped, never beside a backup.
        revision = current_revision(engine)
    finally:
        engine.dispose()
    target = directory / POSTGRESQL_FILE
    _run(
        ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "-f", str(target), libpq],
        env,
    )
    return POSTGRESQL_FILE, revision


def check_dump(backend: str, path: Path) -> None:
    """DatabaseError unless the dump reads back whole: ``PRAGMA integrity_check`` for
    SQLite, ``pg_restore --list`` (its table of contents) for PostgreSQL."""
    if backend == "sqlite":
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise DatabaseError(f"{path.name} is not a readable SQLite database: {exc}") from exc
        if result != ["ok"]:
            raise DatabaseError(f"{path.name} fails PRAGMA integrity_check: {result[:5]}")
        return
    listing = _run(["pg_restore", "--list", str(path)])
    if "TABLE DATA" not in listing:
        raise DatabaseError(f"{path.name} holds no table data")


def is_empty(url: str) -> bool:
    """True when no table of the database holds a row (the schema's revision aside): a
    new database, or one a server only migrated."""
    if backend_of(url) == "sqlite" and not _sqlite_path(url).exists():
        return True
    engine = make_engine(url, pool_size=1)
    try:
        names = [n for n in inspect(engine).get_table_names() if n != _VERSION_TABLE]
        with engine.connect() as conn:
            for name in names:
                if conn.execute(select(text("1")).select_from(table(name)).limit(1)).first():
                    return False
        return True
    finally:
        engine.dispose()


def restore(url: str, backend: str, path: Path) -> None:
    """Replace the target database's tables with the dump's (the dump is checked)."""
    if backend_of(url) != backend:
        raise DatabaseError(f"a {backend} dump cannot be restored into {backend_of(url)}")
    if backend == "sqlite":
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(target.name + ".restoring")
        shutil.copyfile(path, staged)
        with staged.open("rb+") as handle:
            os.fsync(handle.fileno())
        # The old write-ahead log first: left beside the new file, SQLite would replay the
        # old database's pages into it.
        for suffix in ("-wal", "-shm", "-journal"):
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        os.replace(staged, target)
        return
    engine = make_engine(url, pool_size=1)
    try:
        existing = MetaData()
        existing.reflect(engine)
        existing.drop_all(engine)
    finally:
        engine.dispose()
    libpq, env = _libpq(url)
    _run(
        [
            "pg_restore",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            "-d",
            libpq,
            str(path),
        ],
        env,
    )
