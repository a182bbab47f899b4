"""Access control of the API server: who calls (JWT), what they may call (role table),
how much (limits), and by when the answer is due (deadlines).

Object-level checks (which projects and tasks a caller reaches) live with the domain
code in ``server.projects`` and ``server.tasks``; they take the principal explicitly.
"""

from core.deadline import deadline_remaining, remaining_seconds, set_deadline
from server.access._context import SYSTEM, current_principal, set_principal
from server.access._gate import AccessControl, Authenticator, SessionCheck
from server.access._limits import ConcurrencyLimit, RateLimiter, StreamSlots
from server.access._owner import owner_for, viewer_of
from server.access._table import PUBLIC_PREFIXES, RPC_ROLES, allowed_roles, is_public

__all__ = [
    "PUBLIC_PREFIXES",
    "RPC_ROLES",
    "SYSTEM",
    "AccessControl",
    "Authenticator",
    "ConcurrencyLimit",
    "RateLimiter",
    "SessionCheck",
    "StreamSlots",
    "allowed_roles",
    "current_principal",
    "deadline_remaining",
    "is_public",
    "owner_for",
    "remaining_seconds",
    "set_deadline",
    "set_principal",
    "viewer_of",
]
