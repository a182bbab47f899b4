"""One database read shared by the scrapes of a short window.

Prometheus may scrape several times a second (more than one server, a manual curl); the
collectors that read the database at scrape time go through a :class:`ScrapeRead`, so a
burst of scrapes costs one statement, concurrent scrapes wait for the one in flight
rather than issuing their own, and a failed read (the database down) leaves that
collector's families out of the scrape instead of failing the whole scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["MAX_AGE_SECONDS", "ScrapeRead"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_AGE_SECONDS = 2.0
"""How long one answer serves later scrapes: the gauges move slower than that matters."""


class ScrapeRead(Generic[T]):
    """``read()`` at most once per ``max_age_seconds``; ``None`` when it failed."""

    def __init__(
        self, read: Callable[[], T], what: str, *, max_age_seconds: float = MAX_AGE_SECONDS
    ) -> None:
        self._read = read
        self._what = what
        self._max_age_seconds = max_age_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, T] | None = None

    def get(self) -> T | None:
        """The last answer while it is young enough, else a fresh one (``None`` on error)."""
        with self._lock:  # one scrape reads the database; concurrent ones share it
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._max_age_seconds:
                try:
                    self._cached = (now, self._read())
                except Exception:  # any driver error: the scrape goes on without these
                    log.warning("%s unavailable (database?)", self._what, exc_info=True)
                    return None
            return self._cached[1]
