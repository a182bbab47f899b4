"""Real processes for the cache sidecar tests: private memcached servers and sidecars."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tests._support import Service, start_service, wait_for

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"
T = TypeVar("T")

TEST_POLICY = """
key_prefix = "t"

[defaults]
ttl_seconds = 60
ttl_jitter_fraction = 0.1
negative_ttl_seconds = 30
lease_ttl_seconds = 5
lease_wait_seconds = 2.0
compress_threshold_bytes = 256
max_value_bytes = 262144

[namespaces.projects]
invalidate_keys_on = { "project.*" = "project_id" }

[namespaces.project_lists]
invalidate_namespace_on = ["project.*"]

# Tiny limits: the size cap and lease-wait timeouts without slow tests.
[namespaces.small]
max_value_bytes = 1024
lease_wait_seconds = 0.2

[namespaces.race]
lease_wait_seconds = 1.0
"""

# Fast failure detection so outage tests take fractions of a second, not seconds.
SIDECAR_ENV = {
    "AGENTIC_CACHE_LISTEN_ADDRESS": "127.0.0.1:0",
    "AGENTIC_CACHE_METRICS_PORT": "0",
    "AGENTIC_CACHE_EVENTS": "off",
    "AGENTIC_MEMCACHED_CONNECT_TIMEOUT_SECONDS": "0.05",
    "AGENTIC_MEMCACHED_TIMEOUT_SECONDS": "0.1",
    "AGENTIC_CACHE_BREAKER_FAILURE_THRESHOLD": "2",
    "AGENTIC_CACHE_BREAKER_RESET_SECONDS": "0.2",
    "AGENTIC_CACHE_SHUTDOWN_GRACE_SECONDS": "1",
}


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a test scenario on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within_seconds: float, message: str
) -> None:
    """Await ``check`` until it holds; fail with ``message`` after ``within_seconds``.

    For state in another process (a sidecar's Stats), which offers nothing to await.
    """
    deadline = time.monotonic() + within_seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_seconds}s: {message}")
        await asyncio.sleep(0.02)


class Memcached:
    """A private memcached on a fixed loopback port, UDP off (unless a test needs it
    on), that tests may kill, pause (SIGSTOP: a hung node) and restart on the same port."""

    def __init__(self, port: int, log_path: Path, *, udp_port: int = 0) -> None:
        self.port = port
        self.log_path = log_path
        self.udp_port = udp_port
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def address(self) -> str:
        """host:port for AGENTIC_MEMCACHED_SERVERS."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart) on this port and wait until it answers ``version``."""
        args = [MEMCACHED, "-l", "127.0.0.1", "-U", str(self.udp_port), "-p", str(self.port)]
        args += ["-m", "64"]
        if os.geteuid() == 0:
            args += ["-u", "root"]  # memcached refuses to run as root without it
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.paused = False
        try:
            wait_for(self._answers, timeout=10, message=f"memcached on port {self.port}")
        except BaseException:
            self.kill()
            raise

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"memcached exited with {self.process.returncode}:\n"
                + self.log_path.read_text(errors="replace")
            )
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"version\r\n")
                return sock.recv(64).startswith(b"VERSION")
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9: the node vanishes with everything it held."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT: the node answers again, with everything it held before."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        """Stop for good. SIGKILL: nothing in a test server is worth keeping, and
        memcached takes about a second to honour SIGTERM."""
        self.kill()


MemcachedFactory = Callable[[], Memcached]
"""Fixture type: starts one more private memcached."""
SidecarFactory = Callable[..., Service]
"""Fixture type: starts one more sidecar on the given memcached servers (and env)."""


def start_sidecar(
    workdir: Path,
    servers: Sequence[Memcached],
    policy_file: Path,
    env: Mapping[str, str] | None = None,
) -> Service:
    """Start ``python -m cache_sidecar`` on a free port; return once it is serving."""
    full_env = {
        **SIDECAR_ENV,
        "AGENTIC_MEMCACHED_SERVERS": ",".join(m.address for m in servers),
        "AGENTIC_CACHE_POLICY_FILE": str(policy_file),
        **(env or {}),
    }
    return start_service("cache_sidecar", full_env, workdir)
