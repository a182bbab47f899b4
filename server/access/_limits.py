"""Resource limits per server and per principal (OWASP API4): refuse early, say when to retry.

Every refusal is RESOURCE_EXHAUSTED with a ``google.rpc.RetryInfo`` delay, so well-behaved
clients back off instead of hammering. All three live on the event loop (no locks).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from core.rpc import ResourceExhausted

__all__ = ["ConcurrencyLimit", "RateLimiter", "StreamSlots"]

# Idle buckets are dropped once this many keys are tracked, so a stream of distinct
# principals cannot grow the table without bound.
_MAX_TRACKED_KEYS = 10_000


class RateLimiter:
    """A token bucket per key: ``rate_per_second`` sustained, ``burst`` at once."""

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        what: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("rate_per_second must be > 0 and burst >= 1")
        self._rate = rate_per_second
        self._burst = float(burst)
        self._what = what
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def acquire(self, key: str) -> None:
        """Take one token for ``key`` or raise RESOURCE_EXHAUSTED with the wait."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise ResourceExhausted(
                f"{self._what} rate limit reached; retry later",
                reason="RATE_LIMITED",
                retry_after_seconds=(1.0 - tokens) / self._rate,
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > _MAX_TRACKED_KEYS:
            self._prune(now)

    def _prune(self, now: float) -> None:
        # A bucket that has refilled is indistinguishable from a new one: forget it.
        full = [
            k
            for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self._rate >= self._burst
        ]
        for key in full:
            del self._buckets[key]


class StreamSlots:
    """At most ``per_key`` open streams per key (principal)."""

    def __init__(self, per_key: int, *, what: str, retry_after_seconds: float = 1.0) -> None:
        self._per_key = per_key
        self._what = what
        self._retry_after = retry_after_seconds
        self._open: dict[str, int] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Occupy a slot for the block; RESOURCE_EXHAUSTED when ``key`` has none left."""
        count = self._open.get(key, 0)
        if count >= self._per_key:
            raise ResourceExhausted(
                f"too many open {self._what} streams (at most {self._per_key}); "
                "close one or retry later",
                reason="TOO_MANY_STREAMS",
                retry_after_seconds=self._retry_after,
            )
        self._open[key] = count + 1
        try:
            yield
        finally:
            left = self._open[key] - 1
            if left:
                self._open[key] = left
            else:
                del self._open[key]


class ConcurrencyLimit:
    """At most ``limit`` RPCs in flight on this server."""

    def __init__(self, limit: int, *, retry_after_seconds: float = 0.1) -> None:
        self._limit = limit
        self._retry_after = retry_after_seconds
        self.in_flight = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Count one RPC in flight for the block; RESOURCE_EXHAUSTED when full."""
        if self.in_flight >= self._limit:
            raise ResourceExhausted(
                f"server busy: {self._limit} calls in flight; retry later",
                reason="TOO_MANY_REQUESTS",
                retry_after_seconds=self._retry_after,
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
