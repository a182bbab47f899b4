"""The one backoff policy of every reconnect and retry loop: exponential, capped, full jitter.

Attempt *n* (from 0) waits a uniformly random time in ``[0, min(max, first * 2**n)]``: "full
jitter" in the terms of the AWS Architecture Blog's "Exponential Backoff And Jitter", the
rule that spreads a crowd of clients that failed together best for the least total wait.
A loop takes one iterator per outage (``policy.delays()``) and starts a fresh one once it
is connected again, which is all a reset is::

    delays = RECONNECT.delays()
    while not stop.is_set():
        try:
            consume()                 # returns or raises once connected and then lost
            delays = RECONNECT.delays()
        except Exception:
            log.warning(...)
        stop.wait(next(delays))       # a stop request ends the wait at once

Why no tenacity or stamina: the loops wait on events between attempts (a stop flag, a
channel that reconnects, a caller's deadline that cuts the last wait short), and some
reset the schedule without leaving the loop; a retrying decorator around one call
expresses neither. The policy is a value, so each loop's numbers sit beside the loop.

Not covered: a failed *task*'s retry delay (``workers._registry.RetryPolicy``) is part of
the task contract that task authors configure per kind, counted in retries of one task
rather than attempts of one connection, and keeps its equal jitter (at least half the
ceiling), so that a retry is never run again at once; and the sidecar's lease polling
(``cache_sidecar._leases``), which is a schedule for reading a value another reader fills,
not a retry of something that failed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff, capped, with full jitter."""

    first_seconds: float
    """The ceiling of the first wait."""
    max_seconds: float
    """The ceiling never grows past this."""
    multiplier: float = 2.0
    """The ceiling grows by this factor per attempt."""

    def __post_init__(self) -> None:
        if not 0 < self.first_seconds <= self.max_seconds or self.multiplier < 1:
            raise ValueError(f"unusable backoff {self!r}")

    def ceilings(self) -> Iterator[float]:
        """The endless sequence of ceilings: first, first * multiplier, ..., max, max, ..."""
        ceiling = self.first_seconds
        while True:
            yield ceiling
            ceiling = min(ceiling * self.multiplier, self.max_seconds)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The endless sequence of waits: each uniform in [0, its ceiling] (full jitter)."""
        uniform = rng.uniform if rng is not None else random.uniform
        for ceiling in self.ceilings():
            yield uniform(0, ceiling)
