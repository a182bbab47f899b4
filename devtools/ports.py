"""Loopback ports for processes that must be told theirs in advance.

Hand-written rather than ``port-for``: the two questions asked here ("any free port" and
"could a listener with SO_REUSEADDR bind this one now") are a few lines of ``socket`` each,
and port-for answers neither the second nor better than the kernel does the first.
"""

from __future__ import annotations

import socket

__all__ = ["free_port", "port_bindable"]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for processes that need one fixed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could bind ``host:port`` now.

    Binds with SO_REUSEADDR, as memcached's and RabbitMQ's own listeners do: connections of a
    killed or stopped predecessor still in TIME-WAIT on the port do not count (a plain bind
    fails for a minute after Ctrl-C), while a live listener does, whatever its own options
    (Linux refuses the bind then).
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
