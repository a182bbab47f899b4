"""Who is calling, for the duration of one RPC (by when the answer is due: ``core.deadline``).

The interceptor sets both before the handler runs; servicers read the principal and
pass it down explicitly to the domain code, and outgoing calls (cache sidecar, database)
read the deadline. Both are context variables, so they follow the RPC's task and, via
``contextvars.copy_context``, the database work it hands to a thread.
"""

from __future__ import annotations

from contextvars import ContextVar

from core.rpc import Internal
from server.auth import Principal, Role

__all__ = ["SYSTEM", "current_principal", "set_principal"]

SYSTEM = Principal(subject="system", roles=frozenset({Role.ADMINISTRATOR}))
"""The principal of every call when authentication is switched off (local experiments)."""

_PRINCIPAL: ContextVar[Principal | None] = ContextVar("agentic_principal", default=None)


def set_principal(principal: Principal) -> None:
    """Record the authenticated caller of the running RPC."""
    _PRINCIPAL.set(principal)


def current_principal() -> Principal:
    """The caller of the running RPC; a defect (INTERNAL) outside an authenticated RPC."""
    principal = _PRINCIPAL.get()
    if principal is None:
        raise Internal("no principal for this call", reason="NO_PRINCIPAL")
    return principal
