"""The session check of every authenticated call, in the order its answers take priority.

1. revoked (the token's session, or its subject before a cut-off) -> SESSION_REVOKED;
2. no ``sid``: a service account (a subject or role on the session-less allow-list) is
   admitted, anyone else is refused -> SESSION_REQUIRED;
3. a service account's session is never idled or aged out;
4. older than the maximum session age (from the earliest ``iat`` known of it) ->
   SESSION_EXPIRED;
5. idle past the timeout (``ActivityTracker``) -> SESSION_EXPIRED.

All refusals are UNAUTHENTICATED: the client must sign in again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from core.rpc import Unauthenticated
from server.auth import Principal, Role
from server.sessions._activity import ActivityTracker, Verdict
from server.sessions._metrics import REFUSALS
from server.sessions._revocations import RevocationList

__all__ = ["SessionGuard"]


def _refuse(message: str, reason: str, label: str) -> Unauthenticated:
    REFUSALS.labels(label).inc()
    return Unauthenticated(message, reason=reason)


class SessionGuard:
    """Checks the session of each call (``server.access`` calls ``check``)."""

    def __init__(
        self,
        revocations: RevocationList,
        *,
        tracker: ActivityTracker | None,
        max_age_seconds: float,
        sessionless_subjects: Iterable[str] = (),
        sessionless_roles: Iterable[Role] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._revocations = revocations
        self._tracker = tracker
        self._max_age = max_age_seconds
        self._service_subjects = frozenset(sessionless_subjects)
        self._service_roles = frozenset(sessionless_roles)
        self._clock = clock

    def is_service_account(self, principal: Principal) -> bool:
        """Whether ``principal`` may use session-less tokens (and is never idled out)."""
        return principal.subject in self._service_subjects or bool(
            principal.roles & self._service_roles
        )

    async def check(self, principal: Principal) -> None:
        """Return if ``principal``'s session may call now; raise UNAUTHENTICATED if not."""
        if self._revocations.refuses(principal):
            raise _refuse("this session has been revoked", "SESSION_REVOKED", "revoked")
        if self.is_service_account(principal):
            return
        session_id, issued_at = principal.session_id, principal.issued_at
        if session_id is None or issued_at is None:
            raise _refuse(
                "this token has no session (sid); sign in again", "SESSION_REQUIRED", "required"
            )
        started = issued_at
        if self._tracker is not None:
            started = min(started, self._tracker.first_seen(session_id) or started)
        if self._clock() - started > self._max_age:
            raise _refuse(
                "this session is older than its maximum age; sign in again",
                "SESSION_EXPIRED",
                "expired",
            )
        if self._tracker is None:
            return
        if await self._tracker.check(session_id, issued_at) == Verdict.EXPIRED:
            raise _refuse(
                "this session has been idle too long; sign in again",
                "SESSION_EXPIRED",
                "expired",
            )
