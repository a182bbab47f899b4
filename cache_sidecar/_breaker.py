"""A circuit breaker: pure state machine, injectable clock, no I/O.

    CLOSED --(failure_threshold consecutive failures)--> OPEN
    OPEN --(reset_timeout_seconds elapsed, next allow())--> HALF_OPEN (one trial call)
    HALF_OPEN --(trial succeeds)--> CLOSED
    HALF_OPEN --(trial fails)--> OPEN (timer restarts)

Only one trial call is let through while HALF_OPEN; if its outcome is never recorded
(a caller crashed), another trial is allowed after another reset timeout, so the
breaker cannot wedge half-open. Thread-safe: Memcached calls run in a thread pool.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BreakerSettings", "BreakerState", "CircuitBreaker"]


class BreakerState(enum.Enum):
    """State of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When a breaker opens and how long it stays open."""

    failure_threshold: int = 3
    """Consecutive failures that open the breaker."""
    reset_timeout_seconds: float = 1.0
    """Time spent OPEN before a trial call is allowed."""

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.reset_timeout_seconds <= 0:
            raise ValueError("reset_timeout_seconds must be positive")


TransitionListener = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Decides whether calls to one dependency may be attempted."""

    def __init__(
        self,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionListener | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started_at: float | None = None
        self.transitions = 0
        """Number of state changes so far."""

    @property
    def state(self) -> BreakerState:
        """The current state (OPEN stays OPEN until allow() starts a trial)."""
        return self._state

    def allow(self) -> bool:
        """Return whether a call may be attempted now; may move OPEN to HALF_OPEN."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            now = self._clock()
            if self._state is BreakerState.OPEN:
                if now - self._opened_at < self._settings.reset_timeout_seconds:
                    return False
                self._set(BreakerState.HALF_OPEN)
                self._trial_started_at = now
                return True
            # HALF_OPEN: one trial at a time, unless the last one was never reported.
            started = self._trial_started_at
            if started is None or now - started >= self._settings.reset_timeout_seconds:
                self._trial_started_at = now
                return True
            return False

    def record_success(self) -> None:
        """Report that a call succeeded."""
        with self._lock:
            self._failures = 0
            if self._state is not BreakerState.CLOSED:
                self._trial_started_at = None
                self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """Report that a call failed (timeout, refused connection, broken stream)."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures < self._settings.failure_threshold:
                    return
            # CLOSED past the threshold, a failed trial, or a late failure while OPEN
            # (restarting the timer: the dependency is evidently still failing).
            self._failures = 0
            self._opened_at = self._clock()
            self._trial_started_at = None
            self._set(BreakerState.OPEN)

    def _set(self, new: BreakerState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self.transitions += 1
        if self._on_transition is not None:
            # Called under the lock so listeners see transitions in order; they must be
            # quick and must not call back into this breaker.
            self._on_transition(old, new)
