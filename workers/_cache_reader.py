"""The worker process's one client of the cache sidecar, on a loop thread of its own.

Why the async ``core.cache.CacheClient`` on a loop thread, not the generated sync stub:
the lease protocol (a LOAD grants this reader the fill; LOAD_NO_FILL and an unreachable
sidecar mean "read the origin, fill nothing"; a fill voided by an invalidation is refused,
so a slow reader never writes back a value older than an update) is subtle, and
``CacheClient.read_through`` / ``CacheClient.warm`` are its one implementation (STYLE 15):
a second, synchronous copy would be where the next bug hides. The Celery pool is prefork
and synchronous, so each worker process runs one small event loop in a daemon thread
(started on the first call, after the fork: gRPC channels do not survive a fork) owning
one channel to the sidecar, and the task's thread waits for the loop's answer. Origin
reads run in helper threads (``asyncio.to_thread``), so the loop stays free for the
cache calls' deadlines. One channel per process keeps gRPC's connectivity state between
tasks: a sidecar known to be down costs a task nothing but the failed call's timeout.

Users: rule-set reads of compliance reports (``workers._rule_sets``) and the cache
warming kind (``workers.cache_warm``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from core.cache import CacheClient
from core.tls import TlsConfigError, configured_channel_credentials
from workers._context import TransientError

__all__ = ["CacheReader", "CacheSettings"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# Bounds the wait for the channel to be built on the loop (no I/O: gRPC connects lazily).
_CONNECT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """How a worker reaches its cache sidecar (from WorkerConfig, the server's names)."""

    address: str = ""
    """``host:port`` of the sidecar; empty: no cache, read the database."""
    timeout_seconds: float = 1.0
    """Deadline of one cache call (a read, including a wait for another reader's fill)."""
    server_ca_file: str = ""
    """CA of the sidecar's certificate: set, the channel speaks TLS."""
    client_cert_file: str = ""
    """This worker's client certificate towards a sidecar that requires mTLS."""
    client_key_file: str = ""
    """Its key."""
    server_name: str = ""
    """Name to check the sidecar's certificate against, when not the address's host."""


class CacheReader:
    """The cache sidecar client of one worker process (build it after the fork)."""

    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: CacheClient | None = None
        self._broken = False

    def client(self) -> CacheClient | None:
        """The process's client on its loop thread, started on first use; None when no
        sidecar is configured or its TLS files cannot be used (logged once)."""
        with self._lock:
            if self._client is not None or self._broken or not self.settings.address:
                return self._client
            settings = self.settings
            try:
                credentials = configured_channel_credentials(
                    settings.server_ca_file, settings.client_cert_file, settings.client_key_file
                )
            except TlsConfigError as exc:
                log.error("cache sidecar TLS: %s; reads go to the database", exc)
                self._broken = True
                return None
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="worker-cache", daemon=True).start()
            self._loop = loop

            async def connect() -> CacheClient:
                # The channel belongs to the loop it is created on.
                return CacheClient.connect(
                    settings.address,
                    credentials=credentials,
                    server_name=settings.server_name,
                    timeout_seconds=settings.timeout_seconds,
                )

            self._client = self._on_loop(
                connect(), timeout=_CONNECT_TIMEOUT_SECONDS, what="connect"
            )
            return self._client

    def call(
        self,
        client: CacheClient,
        call: Callable[[CacheClient], Coroutine[Any, Any, _T]],
        *,
        timeout: float,
        what: str,
    ) -> _T:
        """Run ``call(client)`` on the loop and wait for it at most ``timeout`` seconds.

        ``client`` is what :meth:`client` returned. Exceptions of the call propagate
        (``CacheUnavailable``, ``CacheRejected``, the origin's); a call still running
        after ``timeout`` is cancelled and raises TransientError naming ``what``.
        """
        return self._on_loop(call(client), timeout=timeout, what=what)

    def _on_loop(self, coroutine: Coroutine[Any, Any, _T], *, timeout: float, what: str) -> _T:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TransientError(f"{what} took longer than {timeout:g}s") from None
