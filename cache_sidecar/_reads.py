"""Which keys of a namespace were read most in a recent window, in bounded memory.

A most-read warm policy (``warm = { most_read = N, window_seconds = W }``) needs the N
keys read most in the last W seconds. Counting every key exactly would grow with the key
space, so each namespace keeps a ring of time buckets (at most ``MAX_BUCKETS``, each
W / buckets seconds long), and each bucket is a *space-saving* counter (Metwally et
al., 2005) of ``capacity`` slots: a new key that finds the bucket full takes the slot of
the least counted key and inherits its count plus one. Any key read more than
``reads / capacity`` times in a bucket is guaranteed a slot, and counts are
overestimated by at most the inherited minimum, so with capacity a few times N the top N
are the true top N unless reads are nearly uniform (where any N are as good).

Memory is bounded whatever the key count: buckets * capacity keys, each at most
``MAX_TRACKED_KEY_BYTES`` (longer keys are not counted: the sidecar's callers use ids).
Everything runs on the sidecar's event loop, so there is no lock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["MAX_BUCKETS", "MAX_TRACKED_KEY_BYTES", "ReadCounter", "SpaceSaving"]

MAX_BUCKETS = 12
"""Buckets per window: an hour's window moves in 5-minute steps."""
MAX_TRACKED_KEY_BYTES = 1024
"""Longer keys are not counted (they would dominate the memory bound)."""
_CAPACITY_FACTOR = 4
_MIN_CAPACITY = 64


class SpaceSaving:
    """A space-saving top-k counter of at most ``capacity`` keys."""

    __slots__ = ("_capacity", "_counts")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._counts: dict[bytes, int] = {}

    def add(self, key: bytes) -> None:
        """Count one read of ``key``."""
        counts = self._counts
        if key in counts:
            counts[key] += 1
            return
        if len(counts) < self._capacity:
            counts[key] = 1
            return
        # O(capacity), only for a new key when full; capacity is a few hundred slots.
        victim = min(counts, key=counts.__getitem__)
        inherited = counts.pop(victim)
        counts[key] = inherited + 1

    def counts(self) -> dict[bytes, int]:
        """The counted keys and their (over-)estimated counts."""
        return dict(self._counts)

    def __len__(self) -> int:
        return len(self._counts)


class ReadCounter:
    """Reads of one namespace over a sliding window of ``window_seconds``."""

    def __init__(
        self,
        limit: int,
        window_seconds: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window_seconds < 1:
            raise ValueError("limit and window_seconds must be at least 1")
        self.limit = limit
        self.window_seconds = window_seconds
        self._buckets_per_window = min(MAX_BUCKETS, window_seconds)
        self._bucket_seconds = window_seconds / self._buckets_per_window
        self._capacity = max(_MIN_CAPACITY, _CAPACITY_FACTOR * limit)
        self._clock = clock
        # bucket number (time // bucket_seconds) -> its counter; at most buckets + 1 live.
        self._buckets: dict[int, SpaceSaving] = {}

    def record(self, key: bytes) -> None:
        """Count one read of ``key`` now."""
        if len(key) > MAX_TRACKED_KEY_BYTES:
            return
        number = self._bucket_number()
        bucket = self._buckets.get(number)
        if bucket is None:
            self._expire(number)
            bucket = self._buckets[number] = SpaceSaving(self._capacity)
        bucket.add(key)

    def top(self) -> list[bytes]:
        """At most ``limit`` keys read most in the window, most read first (ties by key)."""
        number = self._bucket_number()
        self._expire(number)
        totals: dict[bytes, int] = {}
        for bucket in self._buckets.values():
            for key, count in bucket.counts().items():
                totals[key] = totals.get(key, 0) + count
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        return [key for key, _ in ranked[: self.limit]]

    def _bucket_number(self) -> int:
        return math.floor(self._clock() / self._bucket_seconds)

    def _expire(self, now_number: int) -> None:
        # The window is the current bucket and the ones before it, buckets_per_window in
        # all: a read counts for between (buckets - 1) and buckets bucket lengths.
        oldest = now_number - self._buckets_per_window + 1
        for number in [n for n in self._buckets if n < oldest]:
            del self._buckets[number]
