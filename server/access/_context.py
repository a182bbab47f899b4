"""Who is calling and by when the answer is due, for the duration of one RPC.

The interceptor sets both before the handler runs; servicers read the principal and
pass it down explicitly to the domain code, and outgoing calls (cache sidecar, database)
read the deadline. Both are context variables, so they follow the RPC's task and, via
``contextvars.copy_context``, the database work it hands to a thread.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from server.auth import Principal, Role
from server.rpc import Internal

__all__ = [
    "SYSTEM",
    "current_principal",
    "deadline_remaining",
    "remaining_seconds",
    "set_deadline",
    "set_principal",
]

SYSTEM = Principal(subject="system", roles=frozenset({Role.ADMINISTRATOR}))
"""The principal of every call when authentication is switched off (local experiments)."""

_PRINCIPAL: ContextVar[Principal | None] = ContextVar("agentic_principal", default=None)
_DEADLINE: ContextVar[float | None] = ContextVar("agentic_deadline", default=None)


def set_principal(principal: Principal) -> None:
    """Record the authenticated caller of the running RPC."""
    _PRINCIPAL.set(principal)


def current_principal() -> Principal:
    """The caller of the running RPC; a defect (INTERNAL) outside an authenticated RPC."""
    principal = _PRINCIPAL.get()
    if principal is None:
        raise Internal("no principal for this call", reason="NO_PRINCIPAL")
    return principal


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
