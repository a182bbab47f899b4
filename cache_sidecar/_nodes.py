"""One Memcached node as the sidecar sees it: connections, circuit breaker, quarantine.

Quarantine: a node whose breaker opened, or to which an invalidation could not be
delivered, may hold entries that should have been invalidated. It is not used again
until ``flush_all`` succeeded after the last invalidation it missed: every miss bumps an
epoch, and a flush lifts the quarantine only if the epoch it started at is still current.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError, MemcacheUnknownError

from cache_sidecar._breaker import BreakerSettings, BreakerState, CircuitBreaker

__all__ = ["Node", "NodeDown", "connector", "guarded"]

_log = logging.getLogger(__name__)

# What a dead, hung or confused node looks like through pymemcache: socket errors and
# timeouts (OSError), a closed stream (MemcacheUnexpectedCloseError is a
# MemcacheServerError), SERVER_ERROR replies, unparsable replies. MemcacheClientError
# (an illegal key) is our bug, not the node's, and propagates.
_NODE_ERRORS = (OSError, MemcacheServerError, MemcacheUnknownError)

_T = TypeVar("_T")


class NodeDown(Exception):
    """A call to a node failed; its breaker has been told."""


class Node:
    """One Memcached server: its connections, a breaker and the quarantine flag."""

    def __init__(
        self,
        address: str,
        connect: Callable[[], Any],
        breaker_settings: BreakerSettings,
        clock: Callable[[], float],
    ) -> None:
        self.address = address
        self._connect = connect
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._pool_epoch = 0
        self._quarantined = False
        self._epoch = 0
        self.breaker = CircuitBreaker(
            breaker_settings, clock=clock, on_transition=self._on_breaker_transition
        )

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """Lend a client for exclusive use (pymemcache clients are not thread-safe)."""
        with self._lock:
            client = self._idle.pop() if self._idle else None
            pool_epoch = self._pool_epoch
        if client is None:
            client = self._connect()
        try:
            yield client
        except BaseException:
            client.close()  # its stream may hold half a reply
            raise
        with self._lock:
            if pool_epoch == self._pool_epoch:
                self._idle.append(client)
                return
        client.close()

    def drop_idle_connections(self) -> None:
        """Close idle connections: after one failed, the others are likely dead too
        (a restarted server), and each would otherwise fail once more on first use."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._pool_epoch += 1
        for client in idle:
            client.close()

    @property
    def quarantined(self) -> bool:
        """True while the node must be flushed before it is used again."""
        return self._quarantined

    def available(self) -> bool:
        """Return whether requests may use the node now."""
        return not self._quarantined and self.breaker.allow()

    def quarantine(self, why: str) -> None:
        """Stop using the node until a flush that starts after this call succeeds."""
        with self._lock:
            self._epoch += 1
            if not self._quarantined:
                _log.warning("memcached %s quarantined: %s", self.address, why)
            self._quarantined = True

    def quarantine_epoch(self) -> int:
        """Return the current quarantine epoch, to pass to :meth:`release`."""
        return self._epoch

    def release(self, epoch: int) -> bool:
        """Lift the quarantine after a flush begun at ``epoch`` if nothing was missed since."""
        with self._lock:
            if self._epoch != epoch:
                return False
            self._quarantined = False
        _log.warning("memcached %s flushed and back in use", self.address)
        return True

    def _on_breaker_transition(self, old: BreakerState, new: BreakerState) -> None:
        _log.warning("memcached %s breaker %s -> %s", self.address, old.value, new.value)
        if new is BreakerState.OPEN:
            # Invalidations may be failing for other sidecars too: never trust what the
            # node holds once it has been unreachable long enough to open the breaker.
            self.quarantine("circuit breaker opened")


def connector(
    address: str, *, connect_timeout_seconds: float, timeout_seconds: float
) -> Callable[[], Any]:
    """Return a factory of pymemcache clients for ``host:port``."""
    server = _server(address)
    return lambda: Client(
        server,
        connect_timeout=connect_timeout_seconds,
        timeout=timeout_seconds,
        no_delay=True,
        # Never fire-and-forget: every result here decides correctness.
        default_noreply=False,
    )


def guarded(node: Node, op: Callable[[Any], _T]) -> _T:
    """Run ``op`` with a connection of ``node``, telling its breaker how it went.

    Raises NodeDown when the node failed (timeout, refused, broken stream).
    """
    try:
        with node.connection() as client:
            result = op(client)
    except _NODE_ERRORS as exc:
        node.breaker.record_failure()
        node.drop_idle_connections()
        _log.debug("memcached %s call failed: %r", node.address, exc)
        raise NodeDown(node.address) from exc
    node.breaker.record_success()
    return result


def _server(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"memcached address must be host:port, got {address!r}")
    return host, int(port)
