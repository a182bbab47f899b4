"""Read through the sidecar, and never serve a value older than an acknowledged write.

Reads go through the cache sidecar (``read``): a hit never touches the origin; a miss
lets exactly one caller across the fleet load and fill. When the sidecar or Memcached is
down, reads fall back to the origin, at most ``origin_concurrency`` at a time, so a cache
outage cannot stampede the database.

Writes commit first, then ``invalidate``: the invalidations are delivered through the
sidecar within one bounded wait (``invalidate_timeout_seconds`` of the client, further cut
by the caller's deadline), and not at all when the client already knows the sidecar is
unreachable. What is not delivered stays pending, and until every pending invalidation is
delivered this server reads the origin only, so it never serves a value older than a
write it acknowledged. A background task, started outside any request (its own context:
no request deadline), delivers the pending ones in batches with jittered backoff, and at
once when the channel reconnects. The write's domain event, committed with the change in
the event outbox, carries the same invalidation to the other replicas' caches.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Counter, Gauge

from core.backoff import Backoff
from core.cache import CacheClient, CacheClientError, Invalidation

log = logging.getLogger(__name__)

ORIGIN_LOADS = Counter(
    "agentic_origin_loads_total", "Reads answered from the database.", ("resource",)
)
INVALIDATION_FAILURES = Counter(
    "agentic_cache_invalidation_failures_total",
    "Attempts to deliver cache invalidations that failed (they stay pending).",
)
PENDING_INVALIDATIONS = Gauge(
    "agentic_cache_pending_invalidations",
    "Undelivered cache invalidations; while above 0 this server reads the database only.",
)

# Redelivery backoff; capped low so that reads come back to the cache within about a
# second of the sidecar answering again.
_REDELIVERY = Backoff(first_seconds=0.05, max_seconds=1.0)

_Item = tuple[str, bytes | None]  # (namespace, key); key None: the whole namespace


class CoherentCache:
    """The cache as a server's facades use it: coherent read-through and invalidation."""

    def __init__(self, cache: CacheClient | None, *, origin_concurrency: int) -> None:
        self._cache = cache
        self._origin = asyncio.Semaphore(origin_concurrency)
        # Undelivered invalidations, each with the number of the write that last added it:
        # a delivery only clears what no later write has added again meanwhile.
        self._pending: dict[_Item, int] = {}
        self._writes = 0
        self._wake = asyncio.Event()
        self._redeliverer: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Undelivered invalidations."""
        return len(self._pending)

    async def read(
        self,
        namespace: str,
        key: bytes,
        load: Callable[[], Awaitable[bytes | None]],
        *,
        resource: str,
    ) -> bytes | None:
        """The value of ``key`` from the cache, or from ``load`` (None: not found)."""

        async def origin() -> bytes | None:
            async with self._origin:
                ORIGIN_LOADS.labels(resource).inc()
                return await load()

        if self._cache is None or self._pending:
            return await origin()
        return await self._cache.read_through(namespace, key, origin)

    async def invalidate(self, invalidations: Sequence[Invalidation]) -> None:
        """Make a committed write's invalidations take effect before it is acknowledged.

        Returns once they were delivered, or are pending (reads then go to the origin).
        Never raises: the write is committed whatever happens here.
        """
        if self._cache is None:
            return
        if not self._pending and self._cache.reachable():
            try:
                await self._cache.invalidate_many(invalidations)
                return
            except CacheClientError:
                INVALIDATION_FAILURES.inc()
        # The sidecar is known to be down (or just failed): no wait, deliver it later.
        self._writes += 1
        for invalidation in invalidations:
            for key in invalidation.keys if invalidation.keys is not None else (None,):
                self._pending[(invalidation.namespace, key)] = self._writes
        PENDING_INVALIDATIONS.set(len(self._pending))
        self._wake.set()

    def start(self) -> None:
        """Start delivering pending invalidations in the background (a serving server)."""
        if self._cache is not None and self._redeliverer is None:
            # A fresh context: no request's deadline may reach the background work.
            self._redeliverer = asyncio.create_task(
                self._redeliver_forever(), name="cache-redelivery", context=contextvars.Context()
            )

    async def close(self) -> None:
        """Stop redelivering (on shutdown; the domain events carry what is left)."""
        if self._redeliverer is not None:
            self._redeliverer.cancel()
            await asyncio.gather(self._redeliverer, return_exceptions=True)

    async def _redeliver_forever(self) -> None:
        assert self._cache is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            delays = _REDELIVERY.delays()
            while self._pending:
                log.warning(
                    "%d cache invalidation(s) undelivered; reading from the database meanwhile",
                    len(self._pending),
                )
                if await self._deliver_pending():
                    break
                pause = next(delays)
                if self._cache.reachable():
                    # Connected, yet the batch failed: wait the backoff out.
                    await asyncio.sleep(pause)
                else:
                    # Back at once when the channel reconnects, else after the backoff.
                    await self._cache.wait_ready(pause)
            if not self._pending:
                log.info("pending cache invalidations delivered; reading through the cache again")

    async def _deliver_pending(self) -> bool:
        """Deliver every pending invalidation in one batch; True when none is left."""
        assert self._cache is not None
        snapshot = dict(self._pending)
        keys: dict[str, list[bytes]] = {}
        whole: list[str] = []
        for namespace, key in snapshot:
            if key is None:
                whole.append(namespace)
            else:
                keys.setdefault(namespace, []).append(key)
        batch = [Invalidation(ns) for ns in whole]
        batch += [Invalidation(ns, tuple(ks)) for ns, ks in keys.items() if ns not in whole]
        try:
            await self._cache.invalidate_many(batch)
        except CacheClientError:
            INVALIDATION_FAILURES.inc()
            return False
        for item, write in snapshot.items():
            if self._pending.get(item) == write:
                del self._pending[item]
        PENDING_INVALIDATIONS.set(len(self._pending))
        return not self._pending
