"""Helpers the test fixtures share: bounded waits, health checks and databases.

Starting our processes is ``tests._processes``'s job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from devtools.ports import free_port

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], bool], *, timeout: float, message: str) -> None:
    """Poll ``predicate`` until true; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def health_status(address: str, service: str = "") -> str:
    """The grpc.health.v1 status of ``service`` at ``address`` (health needs no token)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


# --- PostgreSQL -------------------------------------------------------------------------

SHARED_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def _can_connect(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def _private_postgres(workdir: Path) -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster on a free port; stop it afterwards."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not bins or shutil.which("runuser") is None:
        raise AssertionError(
            "no PostgreSQL reachable at 127.0.0.1:5432 and no server binaries to start a "
            "private one (apt-get install postgresql)"
        )
    bindir = bins[-1]
    data = workdir / "pgdata"
    data.mkdir(parents=True)
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    opts = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1"
    ctl = [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60"]
    subprocess.run([*ctl, "-o", opts, "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "fast", "stop"], check=False, capture_output=True)


def libpq_url(database_url: str) -> str:
    """The libpq (psycopg) form of a SQLAlchemy ``postgresql+psycopg://`` URL."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def postgres_database(workdir: Path) -> Iterator[str]:
    """A fresh, uniquely named database (dropped afterwards); SQLAlchemy URL form."""
    import psycopg

    with _admin_url(workdir) as admin:
        name = f"agentic_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + (
                f"/{name}"
            )
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(backend: str, workdir: Path, name: str = "agentic") -> Iterator[str]:
    """A new, empty database of ``backend`` ("sqlite" or "postgresql"): its URL. SQLite is
    the file ``workdir/name.db``; PostgreSQL a uniquely named database, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'{name}.db'}"
    else:
        with postgres_database(workdir / f"pg-{name}") as url:
            yield url


@contextmanager
def _admin_url(workdir: Path) -> Iterator[str]:
    if _can_connect(SHARED_POSTGRES):
        yield SHARED_POSTGRES
    else:
        with _private_postgres(workdir) as url:
            yield url
