"""The shipped sidecar policy keeps a session's activity as long as the servers' idle timeout.

The sidecar owns the sessions namespace's TTL (callers never choose TTLs) and the API server
owns the idle timeout (AGENTIC_SESSION_IDLE_SECONDS); they live in two files. A TTL shorter
than the timeout logs idle-but-valid sessions out early, so the defaults are checked here.
"""

from __future__ import annotations

from cache_sidecar._policy import load_policy
from server._config import ServerConfig
from tests.server.sessions._stack import SHIPPED_POLICY


def test_the_sessions_ttl_covers_the_default_idle_timeout_without_jitter() -> None:
    sessions = load_policy(SHIPPED_POLICY).get("sessions")
    assert sessions is not None, "the shipped policy has no sessions namespace"
    idle = ServerConfig.from_env({"AGENTIC_AUTH_ENABLED": "false"}).session_idle_seconds
    assert sessions.ttl_seconds >= idle, (sessions.ttl_seconds, idle)
    assert sessions.ttl_jitter_fraction == 0.0  # a record must not expire before its time
    assert sessions.negative_ttl_seconds >= idle  # an expired verdict holds as long
