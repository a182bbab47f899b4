"""A private memcached on loopback: the one launcher of ``make run``, the tests and the bench.

Always bound to 127.0.0.1, with UDP off unless a test asks for it (memcached has no
authentication, and its UDP port is an amplification vector). Tests may kill it (-9),
pause it (SIGSTOP: a hung node) and restart it on the same port.

Hand-written rather than on mirakuru: readiness here is memcached answering ``version``
(which also gives the version the benchmark reports), pause and resume need the raw process,
and stopping is SIGKILL because nothing in a private memcached is worth the second it takes
to honour SIGTERM; what is left of mirakuru's lifecycle is ``subprocess.Popen`` itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from devtools._wait import wait_until
from devtools.ports import port_bindable

__all__ = ["Memcached", "MemcachedError", "MemcachedPortTaken"]


class MemcachedError(RuntimeError):
    """memcached is missing, its port is taken, or it exited or stayed silent while starting."""


class MemcachedPortTaken(MemcachedError):
    """Something already listens on the port memcached was to bind."""


def _binary() -> str:
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    if not os.access(binary, os.X_OK):
        raise MemcachedError(
            "memcached is not installed: `make system-deps` installs it as root, or "
            "run `sudo apt-get install memcached`"
        )
    return binary


class Memcached:
    """One private memcached on a fixed loopback port; ``start`` again restarts it there."""

    def __init__(
        self, port: int, log_path: Path | None = None, *, udp_port: int = 0, memory_mb: int = 64
    ) -> None:
        self.port = port
        self.log_path = log_path
        """Where its output goes (appended); None: this process's stdout and stderr."""
        self.udp_port = udp_port
        self.memory_mb = memory_mb
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.version = ""
        """``memcached <version>`` as the running server reports it (empty until started)."""

    @property
    def address(self) -> str:
        """host:port for AGENTIC_MEMCACHED_SERVERS."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return None if self.process is None or self.process.poll() is not None else self.process.pid

    def start(self, *, timeout_seconds: float = 10.0) -> None:
        """Start (or restart) on this port and wait until it answers ``version``."""
        binary = _binary()
        # Checked first: another memcached on the port would answer our readiness probe
        # while this one fails to bind and exits.
        if not port_bindable(self.port):
            raise MemcachedPortTaken(f"port {self.port} is taken")
        args = [binary, "-l", "127.0.0.1", "-U", str(self.udp_port), "-p", str(self.port)]
        args += ["-m", str(self.memory_mb)]
        if os.geteuid() == 0:
            args += ["-u", "root"]  # memcached refuses to run as root without naming the user
        if self.log_path is None:
            self.process = subprocess.Popen(args)
        else:
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.paused = False
        try:
            wait_until(
                self._answers,
                timeout_seconds=timeout_seconds,
                what=f"memcached on port {self.port} to answer",
                error=MemcachedError,
            )
        except BaseException:
            self.kill()
            raise

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = "" if self.log_path is None else "\n" + self.log_path.read_text(errors="replace")
            raise MemcachedError(f"memcached exited with {self.process.returncode}{log}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"version\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        if not reply.startswith(b"VERSION "):
            return False
        self.version = "memcached " + reply[len(b"VERSION ") :].decode(errors="replace").strip()
        return True

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
        """Stop for good. SIGKILL: nothing in a private memcached is worth keeping, and
        memcached takes about a second to honour SIGTERM."""
        self.kill()
