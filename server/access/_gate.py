"""The door every RPC passes: authenticate the caller, then check the role table.

Order matters: authentication comes before request validation and before any domain
code, so an anonymous caller learns nothing from field violations or NOT_FOUNDs.

Verified tokens are remembered for a short while (a bounded map from the exact token to
its principal, never past the token's own ``exp`` plus leeway), which takes the RS256
signature check off the hot path of a client that reuses its token. The price: a key
removed from the JWKS keeps admitting tokens already seen for at most
``token_cache_seconds``. The session check (``sessions``: revoked, expired, session
required) is not cached: it runs on every call, from memory (``server.sessions``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import grpc

from core.deadline import set_deadline
from core.rpc import PermissionDenied
from server.access._context import SYSTEM, set_principal
from server.access._limits import ConcurrencyLimit
from server.access._table import allowed_roles, is_public
from server.auth import Principal

__all__ = ["AccessControl", "Authenticator", "SessionCheck"]

_DOMAIN = "agentic.backend"


class SessionCheck(Protocol):
    """Whether an authenticated principal's session may call now (``server.sessions``)."""

    async def check(self, principal: Principal) -> None:
        """Return, or raise UNAUTHENTICATED (revoked, expired, session required)."""
        ...


class Authenticator(Protocol):
    """Turns an ``authorization`` metadata value into a principal, or raises UNAUTHENTICATED."""

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal the header proves."""
        ...


def _authorization(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None


class AccessControl:
    """Authentication (``authenticator``; None = off, everyone is SYSTEM) plus the role table."""

    def __init__(
        self,
        authenticator: Authenticator | None,
        *,
        leeway_seconds: float = 30.0,
        token_cache_seconds: float = 60.0,
        token_cache_size: int = 4096,
        concurrency: ConcurrencyLimit | None = None,
        sessions: SessionCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._authenticator = authenticator
        self._sessions = sessions
        self._concurrency = concurrency
        self._leeway = leeway_seconds
        self._cache_seconds = token_cache_seconds
        self._cache_size = token_cache_size
        self._clock = clock
        self._known: dict[str, tuple[Principal, float]] = {}  # header -> (principal, until)

    @property
    def enabled(self) -> bool:
        """Whether callers must present a token."""
        return self._authenticator is not None

    @contextlib.asynccontextmanager
    async def enter(
        self, method: str, context: grpc.aio.ServicerContext, *, streaming: bool
    ) -> AsyncIterator[None]:
        """Admit one call for the block: principal and deadline set, a concurrency slot held.

        Long-lived streams are bounded per principal by their service, not by the
        server-wide concurrency limit (which would let idle watchers starve unary calls).
        """
        principal = await self.admit(method, context.invocation_metadata())
        if principal is None:  # health, reflection
            yield
            return
        set_principal(principal)
        set_deadline(context.time_remaining())
        if streaming or self._concurrency is None:
            yield
            return
        with self._concurrency.hold():
            yield

    async def admit(
        self, method: str, metadata: Sequence[tuple[str, str | bytes]] | None
    ) -> Principal | None:
        """The caller of ``method`` if it may call it; None for public methods.

        Raises UNAUTHENTICATED (bad or missing token) or PERMISSION_DENIED (no role of
        the caller may call ``method``; unknown methods are denied to everyone).
        """
        if is_public(method):
            return None
        principal = await self._authenticate(_authorization(metadata))
        # After the token (cached or not), before the roles: a revoked or expired session
        # is UNAUTHENTICATED whatever it calls, and the check runs on every call.
        if self._sessions is not None and self._authenticator is not None:
            await self._sessions.check(principal)
        if not principal.roles & allowed_roles(method):
            raise PermissionDenied(
                "your roles do not allow this call", reason="ROLE_NOT_ALLOWED", domain=_DOMAIN
            )
        return principal

    async def _authenticate(self, header: str | None) -> Principal:
        if self._authenticator is None:
            return SYSTEM
        now = self._clock()
        if header is not None:
            known = self._known.get(header)
            if known is not None and known[1] > now:
                return known[0]
        principal = await self._authenticator.authenticate(header)
        assert header is not None  # a missing header never authenticates
        self._remember(header, principal, now)
        return principal

    def _remember(self, header: str, principal: Principal, now: float) -> None:
        until = now + self._cache_seconds
        if principal.expires_at is not None:
            until = min(until, principal.expires_at + self._leeway)
        if len(self._known) >= self._cache_size:
            for stale in [k for k, (_, t) in self._known.items() if t <= now] or [
                next(iter(self._known))
            ]:
                del self._known[stale]
        self._known[header] = (principal, until)
