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
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Backoff", "CoolDown"]


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


class CoolDown:
    """After a failure, skip a dependency for a fixed time instead of waiting on it again.

    The AMQP publishers use it (domain events, task runs, event notifications): a broker
    that is down must not make every caller wait out a connect timeout, and whatever was
    not published is retried by its owner (an outbox relay, or nobody for a mere hint).
    Not thread-safe on its own: the publishers call it under their connection lock.
    """

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"unusable cool-down of {seconds} s")
        self.seconds = seconds
        """How long a failure keeps the dependency skipped."""
        self._until = 0.0

    @property
    def active(self) -> bool:
        """True while the last failure is less than ``seconds`` ago: skip the call."""
        return time.monotonic() < self._until

    def start(self) -> None:
        """A call just failed: skip the dependency for ``seconds`` from now."""
        self._until = time.monotonic() + self.seconds
