"""The sidecar's Unix domain socket: a private directory, a lock, no theft of a live socket.

A ``unix:`` listen address (the default) leaves access control to the file system: the
socket sits in a directory that only the sidecar's user may enter (owned by it, mode
0700), so a process of any other user fails at ``connect()`` with EACCES (UNAVAILABLE to
a gRPC client) before it can send a Get or a Fill. The trust boundary is the user: the
API server and the workers run as the sidecar's user (compose: one image, one user);
root, as ever, passes every permission check.

:func:`claim_socket`, before gRPC binds, in this order:

1. The directory: created with mode 0700 when missing; an existing one must belong to
   this process's user and grant nothing to group or others, or the sidecar refuses to
   start (making it private would be guessing at whoever else relies on it).
2. A lock, ``<socket>.lock`` in the same directory, held (``flock``) for the life of the
   process: a second sidecar on the same path is refused, and two starting at once cannot
   both take the socket for stale. The kernel drops the lock of a dead process.
3. An existing socket file: it is connected to. gRPC's bind would unlink it silently
   and take the path over, so a socket that answers (another process serving there, one
   that takes no lock) refuses the start; one that refuses the connection is a dead
   predecessor's and is removed. Something that is not a socket is never removed.

After the bind the socket is made 0600 too (the directory already keeps others out; a
socket's own mode is not honoured on every system). gRPC unlinks the socket when the
server stops; :meth:`SocketClaim.release` only drops the lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from core.config import ConfigError

__all__ = ["MAX_SOCKET_PATH_BYTES", "SocketClaim", "SocketError", "claim_socket"]

MAX_SOCKET_PATH_BYTES = 107
"""Longest socket path Linux accepts (``sun_path`` is 108 bytes, NUL included)."""

_PROBE_TIMEOUT_SECONDS = 1.0


class SocketError(ConfigError):
    """The socket or its directory cannot be used safely; the message says why and what to do."""


@dataclass
class SocketClaim:
    """A socket path this process may bind: its directory checked, its lock held."""

    path: Path
    """Absolute path of the socket."""
    _lock_fd: int

    def secure(self) -> None:
        """After the bind: the socket itself 0600 (owner only)."""
        os.chmod(self.path, 0o600)

    def release(self) -> None:
        """Drop the lock (the socket file is gRPC's to remove when the server stops)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def claim_socket(path: Path) -> SocketClaim:
    """Make ``path`` ready to bind (see the module docstring); raise SocketError if unsafe."""
    path = Path(os.path.abspath(path))
    directory = path.parent
    _private_directory(directory)
    lock_fd = _lock(path)
    try:
        _clear_stale(path)
    except BaseException:
        os.close(lock_fd)
        raise
    return SocketClaim(path, lock_fd)


def _private_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SocketError(
            f"cannot create the socket directory {directory}: {exc.strerror}; create it "
            "(mode 0700, owned by the sidecar's user) or choose another unix: path in "
            "AGENTIC_CACHE_LISTEN_ADDRESS"
        ) from exc
    else:
        # mkdir's mode is filtered by the umask: say 0700 exactly.
        os.chmod(directory, 0o700)
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise SocketError(f"socket directory {directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise SocketError(
            f"socket directory {directory} belongs to uid {info.st_uid}, not to this "
            f"process's uid {os.geteuid()}: another user could replace the socket. Give it "
            "to the sidecar's user (chown) or choose another directory"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise SocketError(
            f"socket directory {directory} has mode {mode:04o}: group or others may enter "
            f"it and connect to the socket (read and fill the cache). Make it private "
            f"(chmod 700 {directory}) or choose another directory"
        )


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise SocketError(
                f"another cache sidecar is serving on {path} (it holds {lock_path}); stop "
                "it or choose another unix: path"
            ) from exc
        raise
    return fd


def _clear_stale(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise SocketError(f"{path} exists and is not a socket; it is left alone")
    if _answers(path):
        raise SocketError(
            f"a process is serving on {path}; the sidecar does not take a live socket over"
        )
    path.unlink(missing_ok=True)


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT_SECONDS)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False  # nobody listens: a dead predecessor's file
    except OSError as exc:
        raise SocketError(f"cannot tell whether {path} is in use: {exc}") from exc
    finally:
        probe.close()
    return True
