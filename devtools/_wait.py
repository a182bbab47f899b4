"""One bounded poll for the launchers: wait for a condition in another process."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout_seconds: float,
    what: str,
    error: type[Exception] = TimeoutError,
) -> None:
    """Poll ``predicate`` with growing pauses; raise ``error`` naming ``what`` on timeout.

    The pause starts at 10 ms (a memcached answers within a few) and grows to 200 ms (a
    RabbitMQ boot takes seconds), so neither kind of wait burns CPU nor adds latency.
    """
    deadline = time.monotonic() + timeout_seconds
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout_seconds:g}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
