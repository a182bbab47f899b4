"""The one place tests and benchmarks start our processes: servers, sidecars, workers.

Each is a real ``python -m <package>`` process on loopback that reports readiness in a
ready file; memcached comes from ``devtools.memcached`` and free ports from
``devtools.ports`` (re-exported here so a test imports its launchers from one module).
Every process started here is the caller's to stop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.memcached import Memcached
from devtools.ports import free_port
from tests._support import REPO, wait_for

__all__ = [
    "SIDECAR_ENV",
    "Memcached",
    "Service",
    "Worker",
    "free_port",
    "loopback_tcp",
    "run_module",
    "start_service",
    "start_sidecar",
    "start_worker",
]

# Fast failure detection so outage tests take fractions of a second, not seconds. The listen
# address is start_sidecar's: a private Unix socket of the test's (the sidecar's default
# transport), unless the test asks for TCP (loopback_tcp, or TLS settings and an address).
SIDECAR_ENV = {
    "AGENTIC_CACHE_METRICS_ADDRESS": "127.0.0.1:0",
    "AGENTIC_CACHE_EVENTS": "off",
    "AGENTIC_MEMCACHED_CONNECT_TIMEOUT_SECONDS": "0.05",
    "AGENTIC_MEMCACHED_TIMEOUT_SECONDS": "0.1",
    "AGENTIC_CACHE_BREAKER_FAILURE_THRESHOLD": "2",
    "AGENTIC_CACHE_BREAKER_RESET_SECONDS": "0.2",
    "AGENTIC_CACHE_SHUTDOWN_GRACE_SECONDS": "1",
}


# Linux's limit on a socket path is 107 bytes; deep test directories get a short one in /tmp.
_SOCKET_PATH_LIMIT = 100


def loopback_tcp(port: int = 0) -> dict[str, str]:
    """A sidecar's environment for plaintext TCP on 127.0.0.1:``port`` (0: a free one), in
    the named insecure mode: for tests that restart a sidecar at the same address or put
    it behind a TCP fault, never the default."""
    return {
        "AGENTIC_CACHE_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "AGENTIC_CACHE_INSECURE_LOOPBACK_TCP": "true",
    }


@dataclass
class Service:
    """A child process of ours with the ports it reported in its ready file."""

    process: subprocess.Popen[bytes]
    ready: dict[str, Any]
    log_path: Path
    scratch: Path | None = None
    """A directory of this process's outside the test's (a short socket path), removed by
    stop()."""

    @property
    def port(self) -> int:
        port = self.ready.get("grpc_port")
        assert port is not None, f"this process serves {self.address}, not a TCP port"
        return int(port)

    @property
    def address(self) -> str:
        """What a client dials: the reported ``grpc_address`` (a sidecar's ``unix:`` socket
        or ``host:port``), else ``127.0.0.1:<grpc_port>``."""
        return str(self.ready.get("grpc_address") or f"127.0.0.1:{self.port}")

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
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return int(self.process.returncode)


def start_service(
    module: str,
    env: Mapping[str, str],
    workdir: Path,
    *,
    timeout: float = 30.0,
    scratch: Path | None = None,
) -> Service:
    """Run ``python -m module`` with ``env``; return once it wrote its ready file.

    ``scratch``, a directory of the process's, is removed when it is stopped (or fails to
    start)."""
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
        # Artifact bytes go to the test's own directory, never to the checkout's var/.
        quiet["AGENTIC_OBJECT_STORE_URL"] = (workdir / "objects").resolve().as_uri()
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
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Service(
        process=process,
        ready=json.loads(ready_file.read_text()),
        log_path=log_path,
        scratch=scratch,
    )


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


def start_sidecar(
    workdir: Path,
    servers: Sequence[Memcached],
    policy_file: Path,
    env: Mapping[str, str] | None = None,
) -> Service:
    """Start ``python -m cache_sidecar``; return once it is serving.

    It listens on a private Unix socket of its own (the default transport; the sidecar
    creates the directory, mode 0700) unless ``env`` sets ``AGENTIC_CACHE_LISTEN_ADDRESS``
    (``loopback_tcp()``, or a TCP address with mTLS). ``Service.address`` is what it serves.
    """
    full_env = {
        **SIDECAR_ENV,
        "AGENTIC_MEMCACHED_SERVERS": ",".join(m.address for m in servers),
        "AGENTIC_CACHE_POLICY_FILE": str(policy_file),
        **(env or {}),
    }
    scratch = None
    if "AGENTIC_CACHE_LISTEN_ADDRESS" not in full_env:
        socket = workdir.resolve() / "run" / "cache.sock"
        if len(str(socket)) > _SOCKET_PATH_LIMIT:
            scratch = Path(tempfile.mkdtemp(prefix="agentic-sidecar-"))
            socket = scratch / "run" / "cache.sock"
        full_env["AGENTIC_CACHE_LISTEN_ADDRESS"] = f"unix:{socket}"
    return start_service("cache_sidecar", full_env, workdir, scratch=scratch)


@dataclass
class Worker:
    """A ``python -m workers`` process group."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        """kill -9 the whole worker: the parent and its pool children, like a crash."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (warm shutdown), then kill after ``timeout``; the exit code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Pool children normally exit with their parent; make sure none is left behind.
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return int(self.process.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(
    env: Mapping[str, str],
    workdir: Path,
    *,
    concurrency: int = 2,
    timeout: float = 30.0,
    wait: bool = True,
    command: list[str] | None = None,
) -> Worker:
    """Start ``python -m workers`` (or ``command``) in its own process group with ``env``;
    return once it consumes its queue (unless ``wait`` is False)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    ready = workdir / f"worker-{tag}.ready.json"
    log_path = workdir / f"worker-{tag}.log"
    full_env = {
        **os.environ,
        "AGENTIC_WORKER_CONCURRENCY": str(concurrency),
        "AGENTIC_WORKER_NAME": f"w{tag}@test",
        # A free port each: tests run several workers at once, beside a `make run` on 9467.
        "AGENTIC_WORKER_METRICS_ADDRESS": "127.0.0.1:0",
        **env,
        "AGENTIC_READY_FILE": str(ready),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command or [sys.executable, "-m", "workers"],
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill -9 takes the children too
        )
    worker = Worker(process, log_path)

    def started() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"worker exited with {process.returncode}:\n{worker.log()}")
        return ready.exists()

    if wait:
        wait_for(started, timeout=timeout, message=f"worker to write {ready}")
    return worker
