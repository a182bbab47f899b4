"""In-process wake-ups of WatchTask streams.

A stream subscribes to its task before it reads the database, then sleeps on its event
until a notification for the task arrives (from this server's own writes, or from the
fanout exchange the workers publish to) or the heartbeat interval passes. Notifications
carry no data the stream trusts: it always reads the events from the database by
sequence number, so a lost, late or duplicated notification cannot cause a gap or a
repeat, only a delay of at most one heartbeat interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class WatchHub:
    """Task id -> the wake-up events of the streams watching it (event loop only)."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that ``notify_threadsafe`` hands notifications to."""
        self._loop = loop

    @contextmanager
    def subscribe(self, task_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``task_id`` may have new events, while the block runs."""
        event = asyncio.Event()
        self._watchers.setdefault(task_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(task_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[task_id]

    def notify(self, task_id: str) -> None:
        """Wake every stream watching ``task_id``."""
        for event in self._watchers.get(task_id, ()):
            event.set()

    def notify_threadsafe(self, task_id: str, _sequence: int = 0) -> None:
        """``notify`` from another thread (the broker consumer)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.notify, task_id)

    @property
    def watched(self) -> int:
        """Number of tasks with at least one stream."""
        return len(self._watchers)
