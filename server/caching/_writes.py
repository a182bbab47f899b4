"""A cached resource's write: commit (change and event together), invalidate, publish.

The sequence every facade of a cached resource runs for a write. The commit puts the
change and its domain event into one transaction (the event outbox); the cache
invalidations are then delivered within one bounded wait (``CoherentCache.invalidate``);
the event is published on the fast path (the relay of any replica retries what the broker
did not confirm); only then does the write return. It is shielded from the caller's
cancellation: a committed change never skips its invalidation because its caller left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from core.cache import Invalidation
from core.events import EventRelay, Outboxed
from server.caching._coherent import CoherentCache

__all__ = ["CoherentWrites"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# (change, its outboxed events): what a store's write returns.
Committed = tuple[T, Sequence[Outboxed]]


def _log_orphan(task: asyncio.Task[Any]) -> None:
    # The caller is gone (cancelled); the outcome is only worth a log line now.
    if not task.cancelled() and task.exception() is not None:
        log.warning("write after its caller left: %s", task.exception())


class CoherentWrites:
    """Runs writes of one resource against its cache and the event relay."""

    def __init__(
        self,
        cache: CoherentCache,
        relay: EventRelay,
        run: Callable[[Callable[[], Any]], Awaitable[Any]],
    ) -> None:
        self._cache = cache
        self._relay = relay
        self._run = run  # runs a blocking call in the database thread pool

    async def write(
        self, call: Callable[[], Committed[T]], invalidations: Sequence[Invalidation]
    ) -> T:
        """Commit ``call``, deliver ``invalidations``, publish its events; shielded."""

        async def commit_invalidate_publish() -> T:
            value, events = await self._run(call)
            await self._cache.invalidate(invalidations)
            if events:
                await self._run(lambda: self._relay.publish_now(events))
            result: T = value
            return result

        task = asyncio.ensure_future(commit_invalidate_publish())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_orphan)
            raise
