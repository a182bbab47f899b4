"""Where WatchTask streams meet notifications: one shared feed per watched task.

Notifications come from this server's own writes (``notify``) and from the fanout
exchange the workers publish to (``notify_threadsafe``, from the broker consumer's
thread). Each goes to the feed of its task, if one is open; the feed reads the database
once for all the streams of the task (see ``_feed`` for the reads and for why no stream
can miss or repeat an event: notifications carry no data trusted for correctness, the
database sequence is the truth).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agentic.tasks.v1 import tasks_pb2

from server.tasks._feed import BACKFILL_EVENTS, FeedStats, ReadEvents, TaskFeed, follow


class WatchHub:
    """Task id -> the shared feed of the streams watching it (event loop only)."""

    def __init__(self) -> None:
        self._feeds: dict[str, TaskFeed] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = FeedStats()
        """Database reads of the feeds and streams, for tests and diagnostics."""

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that ``notify_threadsafe`` hands notifications to."""
        self._loop = loop

    def watch(
        self, task_id: str, after_sequence: int, *, read: ReadEvents, heartbeat_seconds: float
    ) -> AsyncIterator[tasks_pb2.WatchTaskResponse]:
        """A stream of the events of ``task_id`` after ``after_sequence``, then live ones,
        through the task's shared feed (opened with ``read`` if there is none)."""

        def join() -> TaskFeed:
            feed = self._feeds.get(task_id)
            if feed is None:
                feed = TaskFeed(
                    task_id, read, heartbeat_seconds=heartbeat_seconds, stats=self.stats
                )
                self._feeds[task_id] = feed
                feed.start(max(0, after_sequence - BACKFILL_EVENTS))
            feed.streams += 1
            return feed

        return follow(join, after_sequence, self._leave)

    def _leave(self, feed: TaskFeed) -> None:
        feed.streams -= 1
        if feed.streams == 0 and self._feeds.get(feed.task_id) is feed:
            del self._feeds[feed.task_id]
            feed.stop()

    def notify(self, task_id: str, sequence: int = 0) -> None:
        """``task_id`` may have new events (up to ``sequence``, 0 when unknown)."""
        feed = self._feeds.get(task_id)
        if feed is not None:
            feed.notify(sequence)

    def notify_threadsafe(self, task_id: str, sequence: int = 0) -> None:
        """``notify`` from another thread (the broker consumer)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.notify, task_id, sequence)

    @property
    def watched(self) -> int:
        """Number of tasks with at least one stream."""
        return len(self._feeds)
