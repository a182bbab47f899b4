"""Helpers the test fixtures share: bounded waits and real processes on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Re-exported (explicitly, for mypy) until tests written against it import devtools.ports.
from devtools.ports import free_port as free_port

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


@dataclass
class Service:
    """A child process of ours with the ports it reported in its ready file."""

    process: subprocess.Popen[bytes]
    ready: dict[str, Any]
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.ready["grpc_port"])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for exit; kill after ``timeout``. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


def start_service(
    module: str, env: Mapping[str, str], workdir: Path, *, timeout: float = 30.0
) -> Service:
    """Run ``python -m module`` with ``env``; return once it wrote its ready file."""
    workdir.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    ready_file = workdir / f"{module}-{tag}.ready.json"
    log_path = workdir / f"{module}-{tag}.log"
    # Tests reach the shared broker only when they opt in (with their own vhost or names).
    quiet = {"AGENTIC_BROKER_URL": ""}
    if module == "server":
        # API servers trust the test process's development keys unless told otherwise.
        from tests._identity import auth_env

        quiet.update(auth_env())
    full_env = {**os.environ, **quiet, **env, "AGENTIC_READY_FILE": str(ready_file)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"{module} exited with {process.returncode} before it was ready:\n"
                + log_path.read_text(errors="replace")
            )
        return ready_file.exists()

    try:
        wait_for(ready, timeout=timeout, message=f"{module} to write {ready_file}")
    except BaseException:
        process.kill()
        process.wait(5)
        raise
    return Service(process=process, ready=json.loads(ready_file.read_text()), log_path=log_path)


def run_module(
    module: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """``python -m module *args`` from the repository, to completion: its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
def _admin_url(workdir: Path) -> Iterator[str]:
    if _can_connect(SHARED_POSTGRES):
        yield SHARED_POSTGRES
    else:
        with _private_postgres(workdir) as url:
            yield url
