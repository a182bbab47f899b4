"""By when the answer to the running RPC is due: a context variable the interceptor sets.

It follows the RPC's task and, via ``contextvars.copy_context``, the database work it
hands to a thread; outgoing calls (cache sidecar, database statements) read it, so no
dependency call outlives the caller waiting for it. Background work runs in a fresh
context, where there is no deadline.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

__all__ = ["deadline_remaining", "remaining_seconds", "set_deadline"]

_DEADLINE: ContextVar[float | None] = ContextVar("agentic_deadline", default=None)


def set_deadline(remaining: float | None) -> None:
    """Record the incoming deadline (seconds left, None when the client set none)."""
    _DEADLINE.set(None if remaining is None else time.monotonic() + remaining)


def deadline_remaining() -> float | None:
    """Seconds left before the incoming deadline (may be <= 0), None when there is none."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def remaining_seconds(default: float) -> float:
    """Seconds left before the incoming deadline, capped at ``default``; never negative.

    Outgoing calls use this as their timeout, so a dependency never outlives the caller
    that is waiting for it.
    """
    deadline = _DEADLINE.get()
    if deadline is None:
        return default
    return max(0.0, min(default, deadline - time.monotonic()))
