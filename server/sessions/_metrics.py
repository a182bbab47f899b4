"""The sessions' metrics: refusals by reason, idle checks skipped, activity writes, and an
approximate count of active sessions (``SessionsCollector``, registered by ``serve``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["ACTIVITY_WRITES", "IDLE_UNCHECKED", "REFUSALS", "SessionsCollector"]

REFUSALS = Counter(
    "agentic_session_refusals_total",
    "Calls refused for their session: expired (idle or too old), revoked, or required "
    "(a token without sid from a subject not allowed session-less tokens).",
    ("reason",),
)
IDLE_UNCHECKED = Counter(
    "agentic_session_idle_unchecked_total",
    "Calls admitted without their idle check because the cache's sessions namespace could "
    "not answer (idle tracking degrades; revocation does not).",
)
ACTIVITY_WRITES = Counter(
    "agentic_session_activity_writes_total",
    "Background writes of a session's last activity to the cache sidecar, by result.",
    ("result",),
)


class SessionsCollector(Collector):
    """``agentic_sessions_active``: sessions with a call on this server within the idle
    timeout (approximate: another replica's sessions are not counted)."""

    def __init__(self, active: Callable[[], int]) -> None:
        self._active = active

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge sample."""
        yield GaugeMetricFamily(
            "agentic_sessions_active",
            "Sessions with a call on this server within the idle timeout (approximate).",
            value=self._active(),
        )
