"""Sessions: the token's ``sid``, idle timeout through the cache sidecar, revocation.

``SessionGuard`` checks every authenticated call (``server.access`` calls it after the
token is verified): revoked, session-less, too old, idle. ``ActivityTracker`` keeps the
idle state (cache sidecar, ``sessions`` namespace); ``RevocationList`` the revocations
(database, polled); ``Sessions`` and ``SessionService`` revoke.
"""

from server.sessions._activity import SESSIONS_NAMESPACE, ActivityTracker, Verdict
from server.sessions._facade import Sessions
from server.sessions._guard import SessionGuard
from server.sessions._metrics import SessionsCollector
from server.sessions._revocations import Revocation, RevocationList, RevocationStore
from server.sessions._service import SessionService

__all__ = [
    "SESSIONS_NAMESPACE",
    "ActivityTracker",
    "Revocation",
    "RevocationList",
    "RevocationStore",
    "SessionGuard",
    "SessionService",
    "Sessions",
    "SessionsCollector",
    "Verdict",
]
