"""One task's shared event feed, and the WatchTask streams that follow it.

Every stream of a task in this process follows one ``TaskFeed``. The feed alone reads the
database: on a notification it reads the events after the highest sequence it holds
(``high``), once, however many streams watch and however many notifications arrived
while that read ran (they coalesce into the next read). It keeps the newest events it
read, as ready-made responses, in a bounded window ``(base, high]``, and every stream
takes its events from there. N watchers of a task therefore cost one read per event,
not N. When no notification came for a whole heartbeat interval the feed re-reads
anyway (one read per task, a lost notification costs at most that interval of delay)
and, when that read finds nothing, ticks: every idle stream sends a heartbeat, without
reading anything.

Why no stream can see a gap or a repeat:

- Sequences of a task are contiguous and never change once committed (``_log``). The
  feed's window holds exactly the sequences ``base + 1 .. high``, in order: its first
  read takes the newest events in one statement; later reads take the events after
  ``high``, oldest first; a read that would not continue the window (it cannot happen)
  restarts the window instead of leaving a hole in it.
- A stream keeps ``last``, the sequence it sent last (the client's ``after_sequence``
  at first), and only ever sends the events after ``last``, in order: from the window
  when ``last >= base``; otherwise from its own bounded database read (it resumed from
  further back than the window reaches, or fell behind it while it was slow to take
  events). Either way the next event sent is ``last + 1``.
- Notifications carry nothing trusted: a notification's sequence only lets the feed
  skip a read for an event it already holds. Whatever a notification says, the
  database sequence decides what is sent; a lost, late, duplicated or wrong
  notification costs latency (at most one heartbeat interval), never correctness.

A stream ends after it has sent the event at ``high`` when that event is terminal and
was the newest of the task when read: a watcher that connects after the task ended gets
the history and the end at once. A terminal event followed by more events (RetryTask)
does not end a stream replaying history. Slow consumers do not hold anyone up: the
feed never waits for a stream. A stream that is behind takes a snapshot of the window
past its ``last`` (its buffer, bounded by the window); once the window has moved past
it, it reads from the database from ``last`` until it catches up. A feed read that
fails (database down, unknown task) makes every stream waiting on it read for itself,
so each stream fails with its own error (UNAVAILABLE, NOT_FOUND) as before, or carries
on when the database is back.

Everything here runs on the server's event loop; the database calls run wherever the
``read`` callable sends them (the facade's database thread pool).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

from agentic.tasks.v1 import tasks_pb2
from google.protobuf import timestamp_pb2

from core.tasks._record import TaskRecord
from core.tasks._wire import TERMINAL_STATES

log = logging.getLogger(__name__)

RETAIN_EVENTS = 256
"""Events of a task kept in memory: a stream up to this far behind the newest event is
served from memory (a reconnect storm resumes from there), further back it reads the
database. At a few hundred bytes an event, about 100 kB per watched task at most."""

BACKFILL_EVENTS = 64
"""A new feed's first read reaches this far before its first stream's position, so the
streams that join it at nearly the same point (a reconnect storm) start from memory."""

PAGE_EVENTS = 200
"""Events per database read, for the feed's reads forward and a stream's own replay."""


class ReadEvents(Protocol):
    """Reads events of a task: ``TaskStore.events_after`` run off the event loop."""

    async def __call__(
        self, task_id: str, after_sequence: int, *, limit: int, newest: bool
    ) -> tuple[list[bytes], TaskRecord]:
        """Up to ``limit`` serialized events after ``after_sequence``, oldest first (the
        newest ``limit`` of them when ``newest``), and the task; NOT_FOUND when absent."""
        ...


@dataclass
class FeedStats:
    """Database reads of every feed and stream of a hub, since it was made."""

    shared_reads: int = 0
    """Reads by feeds, for all the streams of their task: one per notification (those
    arriving during a read coalesce) and one per idle heartbeat interval."""
    replay_reads: int = 0
    """Reads by single streams that were further behind than their feed's window."""
    failed_reads: int = 0
    """Feed reads that raised (each stream then reads for itself)."""


def _response(data: bytes) -> tasks_pb2.WatchTaskResponse:
    return tasks_pb2.WatchTaskResponse(event=tasks_pb2.TaskEvent.FromString(data))


class TaskFeed:
    """The shared window of one task's newest events, kept current by one reader task."""

    def __init__(
        self,
        task_id: str,
        read: ReadEvents,
        *,
        heartbeat_seconds: float,
        stats: FeedStats,
    ) -> None:
        self.task_id = task_id
        self._read = read
        self._heartbeat_seconds = heartbeat_seconds
        self._stats = stats
        self.streams = 0
        """Streams following this feed; the hub drops the feed when it reaches 0."""
        self._window: deque[tasks_pb2.WatchTaskResponse] = deque()
        self.base = 0
        """The window holds sequences base + 1 .. high."""
        self.high = 0
        self.ready = False
        """The first read succeeded: base and high mean something."""
        self.ended = False
        """The event at ``high`` is terminal and was the task's newest when read."""
        self.last_sequence = 0
        """The task's last sequence as of the last read, for heartbeats."""
        self.ticks = 0
        """Idle heartbeat intervals so far."""
        self.failures = 0
        """Failed reads so far."""
        self.generation = 0
        """Bumped on every change a stream may act on."""
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    # --- the reader ---------------------------------------------------------------------

    def start(self, floor: int) -> None:
        """Start reading: first the newest events after ``floor``, then on notifications."""
        # A fresh context: the feed reads for every stream of the task, so it must not
        # carry the first stream's call context (its deadline, which bounds database
        # statements, or its principal) for as long as it lives.
        self._pump = asyncio.create_task(
            self._run(floor), name=f"task-feed-{self.task_id}", context=contextvars.Context()
        )

    def stop(self) -> None:
        """Stop reading (the last stream left); a read in flight finishes unheeded."""
        if self._pump is not None:
            self._pump.cancel()

    def notify(self, sequence: int = 0) -> None:
        """The task may have events after ``sequence`` (0: unknown); read soon."""
        if sequence and self.ready and sequence <= self.high:
            return  # already held: a hint can only save a read, never cause a skip
        self._wake.set()

    async def _run(self, floor: int) -> None:
        while True:
            try:
                await self._serve(floor)
            except Exception:
                # A bug, not a database error (those are handled per read). The streams
                # must not wait forever on a feed that stopped: start it over from a
                # fresh read; the window restarts, so nobody gets a gap or a repeat.
                log.exception("watch feed of task %s failed; starting it over", self.task_id)
                self.ready = False
                self.failures += 1
                self._publish()
                floor = max(0, self.high - BACKFILL_EVENTS)
                await asyncio.sleep(self._heartbeat_seconds)

    async def _serve(self, floor: int) -> None:
        while not await self._read_newest(floor):
            # Each stream has read for itself (and most likely failed); try again on the
            # next notification or interval, as long as streams remain.
            await self._wait_for_wake()
        while True:
            idle = not await self._wait_for_wake()
            found = await self._read_forward()
            if found == 0 and idle:
                self.ticks += 1
                self._publish()

    async def _wait_for_wake(self) -> bool:
        """Wait for a notification (True) or one heartbeat interval (False)."""
        try:
            await asyncio.wait_for(self._wake.wait(), self._heartbeat_seconds)
            woken = True
        except TimeoutError:
            woken = False
        # Cleared before the read that follows: a notification arriving during that
        # read sets it again and costs exactly one more read, however many arrive.
        self._wake.clear()
        return woken

    async def _fetch(self, after: int, *, newest: bool) -> tuple[list[bytes], TaskRecord] | None:
        self._stats.shared_reads += 1
        try:
            return await self._read(self.task_id, after, limit=PAGE_EVENTS, newest=newest)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stats.failed_reads += 1
            log.debug("watch feed of task %s: read failed: %s", self.task_id, exc)
            self.failures += 1
            self._publish()
            return None

    async def _read_newest(self, floor: int) -> bool:
        """The first read: the newest events after ``floor``."""
        self._wake.clear()
        fetched = await self._fetch(floor, newest=True)
        if fetched is None:
            return False
        events, record = fetched
        items = [_response(data) for data in events]
        if items:
            self._restart_window(items[0].event.sequence - 1)
        else:
            # Nothing after floor: the log ends at record.last_sequence <= floor.
            self._restart_window(min(floor, record.last_sequence))
            self.ended = record.state in TERMINAL_STATES and record.last_sequence <= self.high
        self.ready = True
        self._extend(items, record)
        self._publish()  # also when there was nothing to add: the streams wait for ready
        return True

    async def _read_forward(self) -> int:
        """Read everything after ``high``, page by page; how many events were new."""
        found = 0
        while True:
            fetched = await self._fetch(self.high, newest=False)
            if fetched is None:
                return found
            events, record = fetched
            items = [_response(data) for data in events]
            self._extend(items, record)
            found += len(items)
            if len(items) < PAGE_EVENTS:
                return found

    def _restart_window(self, base: int) -> None:
        self._window.clear()
        self.base = self.high = base

    def _extend(self, items: list[tasks_pb2.WatchTaskResponse], record: TaskRecord) -> None:
        if items and items[0].event.sequence != self.high + 1:
            # Cannot happen (the read was after high, sequences are contiguous); should it
            # anyway, a window restarted at the first event read still has no hole: the
            # streams behind it read the database for themselves.
            log.error(
                "watch feed of task %s: read %d after %d; restarting its window",
                self.task_id,
                items[0].event.sequence,
                self.high,
            )
            self._restart_window(items[0].event.sequence - 1)
        for item in items:
            self._window.append(item)
        self.high += len(items)
        overflow = len(self._window) - RETAIN_EVENTS
        for _ in range(max(0, overflow)):
            self._window.popleft()
        self.base = self.high - len(self._window)
        if items:
            self.ended = items[-1].event.terminal
        self.last_sequence = max(record.last_sequence, self.high)
        if items:
            self._publish()

    def _publish(self) -> None:
        """Wake every stream waiting on this feed."""
        self.generation += 1
        self._changed.set()  # wakes the current waiters; later ones wait for the next
        self._changed.clear()

    # --- the streams' side --------------------------------------------------------------

    def after(self, last: int) -> list[tasks_pb2.WatchTaskResponse]:
        """The held events after ``last`` (base <= last < high), as a snapshot."""
        return list(islice(self._window, last - self.base, None))

    async def changed(self, generation: int) -> None:
        """Return once the feed changed since ``generation``."""
        while self.generation == generation:
            await self._changed.wait()

    async def replay(self, last: int) -> list[tasks_pb2.WatchTaskResponse]:
        """One page of events after ``last`` read for a single stream (raises its error)."""
        self._stats.replay_reads += 1
        events, _ = await self._read(self.task_id, last, limit=PAGE_EVENTS, newest=False)
        return [_response(data) for data in events]


def _heartbeat(last_sequence: int) -> tasks_pb2.WatchTaskResponse:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return tasks_pb2.WatchTaskResponse(
        heartbeat=tasks_pb2.Heartbeat(time=stamp, last_sequence=last_sequence)
    )


async def follow(
    join: Callable[[], TaskFeed], after_sequence: int, leave: Callable[[TaskFeed], None]
) -> AsyncIterator[tasks_pb2.WatchTaskResponse]:
    """One stream: the events after ``after_sequence`` (see the module docstring), then
    heartbeats while idle; ends after the terminal event. It follows the feed ``join``
    returns once the stream starts, and hands it to ``leave`` when the stream ends."""
    feed = join()
    last = after_sequence
    ticks = feed.ticks
    failures = feed.failures
    try:
        while True:
            # A change while anything below awaits makes the wait at the end return at once.
            generation = feed.generation
            if feed.failures != failures:
                # The shared read failed: read for ourselves, which raises our own error
                # (or goes on when the database is back).
                failures = feed.failures
                page = await feed.replay(last)
            elif not feed.ready:
                page = []
            elif last < feed.base:
                page = await feed.replay(last)  # further back than the window reaches
            elif last < feed.high:
                page = feed.after(last)
            elif feed.ended:
                return
            elif feed.ticks != ticks:
                ticks = feed.ticks
                yield _heartbeat(max(feed.last_sequence, last))
                continue
            else:
                page = []
            if page:
                for item in page:
                    yield item
                    last = item.event.sequence
                ticks = feed.ticks  # the events just sent make the next heartbeat due later
                continue
            await feed.changed(generation)
    finally:
        leave(feed)
