"""The shared per-task watch feed (``server.tasks._feed``) in-process, on SQLite and
PostgreSQL: every stream gets every event once and in order, resumes have no gap or
repeat, lost notifications are recovered by the per-task re-read, and database reads per
event do not grow with the number of streams.

The hub is driven the way the facade drives it (``TaskStore.events_after`` in a thread
pool); events are written through the event log, the way every writer writes them, and
notifications are sent (or, to lose one, not sent) by the test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, migrate
from core.rpc import NotFound
from core.tasks import TaskRecord
from core.tasks._log import append, change
from server.tasks import TaskStore
from server.tasks._feed import RETAIN_EVENTS
from server.tasks._watch import WatchHub
from tests._support import fresh_database
from tests.workers._stack import submit_to_store

HEARTBEAT_SECONDS = 0.3
WAIT_SECONDS = 20.0


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A migrated database of each backend, shared by the module (tasks are per test)."""
    workdir = tmp_path_factory.mktemp(f"fanout-{request.param}")
    with fresh_database(request.param, workdir, "fanout") as url:
        eng = make_engine(url, pool_size=4)
        migrate(eng)
        yield eng
        eng.dispose()


class Harness:
    """A hub reading through ``TaskStore.events_after`` in a thread pool, as the facade does."""

    def __init__(self, engine: Engine, executor: ThreadPoolExecutor) -> None:
        self.store = TaskStore(engine)
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.executor = executor
        self.hub = WatchHub()

    async def read(
        self, task_id: str, after_sequence: int, *, limit: int, newest: bool
    ) -> tuple[list[bytes], TaskRecord]:
        call = partial(self.store.events_after, task_id, after_sequence, limit=limit, newest=newest)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def watch(self, task_id: str, after: int = 0) -> AsyncIterator[pb.WatchTaskResponse]:
        return self.hub.watch(task_id, after, read=self.read, heartbeat_seconds=HEARTBEAT_SECONDS)

    async def db(self, fn: Callable[[], object]) -> object:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def submit(self) -> str:
        return submit_to_store(self.store, pb.ProbeSpec(steps=1, step_millis=0))

    async def progress(self, task_id: str, count: int = 1, *, notify: bool = True) -> int:
        """Append ``count`` progress events (notifying after each); the last sequence."""
        last = 0
        for _ in range(count):

            def decide(session: Session, record: TaskRecord | None, time: datetime) -> int:
                assert record is not None
                return append(
                    session, record, time, progress_message=f"after {record.last_sequence}"
                ).last_sequence

            last = await self.run(partial(change, self.sessions, task_id, decide))
            if notify:
                self.hub.notify(task_id)
        return last

    async def run(self, fn: Callable[[], int]) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)


@dataclass
class Stream:
    """One stream's consumer: what it received, and whether it ended normally."""

    sequences: list[int] = field(default_factory=list)
    heartbeats: list[int] = field(default_factory=list)
    ended: bool = False
    error: BaseException | None = None
    go: asyncio.Event | None = None
    """When set: wait for it before taking each item after the first (a slow consumer)."""

    async def consume(self, items: AsyncIterator[pb.WatchTaskResponse]) -> None:
        try:
            async for item in items:
                if item.HasField("event"):
                    self.sequences.append(item.event.sequence)
                else:
                    self.heartbeats.append(item.heartbeat.last_sequence)
                if self.go is not None:
                    await self.go.wait()
            self.ended = True
        except Exception as exc:
            self.error = exc


def start(
    h: Harness, task_id: str, count: int, after: int = 0
) -> tuple[list[Stream], list[asyncio.Task[None]]]:
    streams = [Stream() for _ in range(count)]
    tasks = [asyncio.create_task(s.consume(h.watch(task_id, after))) for s in streams]
    return streams, tasks


async def eventually(
    predicate: Callable[[], bool], message: str, limit_seconds: float = WAIT_SECONDS
) -> float:
    """Poll (bounded) until ``predicate`` holds; the seconds it took."""
    begin = time.monotonic()
    while not predicate():
        if time.monotonic() - begin > limit_seconds:
            raise AssertionError(f"timed out after {limit_seconds}s: {message}")
        await asyncio.sleep(0.005)
    return time.monotonic() - begin


def run(engine: Engine, test: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        with ThreadPoolExecutor(4) as executor:
            h = Harness(engine, executor)
            await asyncio.wait_for(test(h), 60.0)
            assert h.hub.watched == 0, "every feed closes with its last stream"

    asyncio.run(main())


def _all_at(streams: list[Stream], last: int) -> bool:
    return all(s.sequences[-1:] == [last] for s in streams)


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_many_streams_get_every_event_once_in_order_with_one_read_per_event(engine: Engine) -> None:
    async def body(h: Harness) -> None:
        task_id = await h.submit()
        await h.progress(task_id, 3)
        streams, tasks = start(h, task_id, 200)
        await eventually(lambda: all(s.sequences == [1, 2, 3, 4] for s in streams), "history")
        before = h.hub.stats.shared_reads
        events = 20
        for i in range(events):
            last = await h.progress(task_id)
            # One event at a time, delivered to everyone before the next: no coalescing
            # helps the count below.
            await eventually(partial(_all_at, streams, last), f"event {i}")
        shared = h.hub.stats.shared_reads - before
        # One read per notification, plus at most a safety re-read per heartbeat
        # interval; 200 streams re-reading would be 4000.
        assert shared <= events + 5, f"{shared} database reads for {events} events"
        assert h.hub.stats.replay_reads == 0
        await h.db(partial(h.store.cancel, task_id))
        h.hub.notify(task_id)
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_SECONDS)
        final = list(range(1, 4 + events + 2))
        assert all(s.ended and s.error is None for s in streams)
        assert all(s.sequences == final for s in streams), (
            "every stream: every event once, in order"
        )

    run(engine, body)


def test_resume_from_old_sequences_while_live_has_no_gap_or_repeat(engine: Engine) -> None:
    async def body(h: Harness) -> None:
        task_id = await h.submit()
        head = await h.progress(task_id, RETAIN_EVENTS + 40, notify=False)
        live, live_tasks = start(h, task_id, 5, after=head)
        await eventually(lambda: h.hub.watched == 1, "the feed to open")
        writer = asyncio.create_task(h.progress(task_id, 40))
        # While events are being written: one stream further back than the window (it
        # replays from the database, then joins), one inside it, one from the start.
        resumed: list[Stream] = []
        resumed_tasks: list[asyncio.Task[None]] = []
        for after in (5, head - 20, 0):
            group, group_tasks = start(h, task_id, 3, after=after)
            resumed += group
            resumed_tasks += group_tasks
        last = await writer
        await h.db(partial(h.store.cancel, task_id))
        h.hub.notify(task_id)
        await asyncio.wait_for(asyncio.gather(*live_tasks, *resumed_tasks), WAIT_SECONDS)
        end = last + 1
        for s in live:
            assert s.sequences == list(range(head + 1, end + 1))
        for s, after in zip(resumed, [5] * 3 + [head - 20] * 3 + [0] * 3, strict=True):
            assert s.error is None
            assert s.ended
            assert s.sequences == list(range(after + 1, end + 1)), f"from {after}"
        assert h.hub.stats.replay_reads > 0, "the streams behind the window read for themselves"

    run(engine, body)


def test_lost_notification_is_recovered_by_one_reread_per_task(engine: Engine) -> None:
    async def body(h: Harness) -> None:
        task_id = await h.submit()
        streams, tasks = start(h, task_id, 50)
        await eventually(lambda: all(s.sequences == [1] for s in streams), "history")
        before = h.hub.stats.shared_reads
        last = await h.progress(task_id, notify=False)  # its notification is lost
        took = await eventually(
            lambda: all(s.sequences[-1] == last for s in streams), "the unnotified event"
        )
        assert took < HEARTBEAT_SECONDS * 4, f"recovered after {took:.2f} s"
        # Idle: heartbeats for every stream, one re-read per interval for all of them.
        begin = time.monotonic()
        await eventually(lambda: all(len(s.heartbeats) >= 3 for s in streams), "heartbeats")
        intervals = (time.monotonic() - begin) / HEARTBEAT_SECONDS + 2
        shared = h.hub.stats.shared_reads - before
        assert shared <= intervals + 1, f"{shared} reads in {intervals:.0f} intervals"
        assert h.hub.stats.replay_reads == 0
        assert all(set(s.heartbeats) == {last} for s in streams)
        await _stop(tasks)

    run(engine, body)


def test_slow_consumer_neither_blocks_others_nor_loses_events(engine: Engine) -> None:
    async def body(h: Harness) -> None:
        task_id = await h.submit()
        go = asyncio.Event()
        slow = Stream(go=go)
        slow_task = asyncio.create_task(slow.consume(h.watch(task_id)))
        fast, fast_tasks = start(h, task_id, 10)
        await eventually(lambda: slow.sequences == [1], "the slow stream's first event")
        # Far more events than the window holds go by while the slow stream takes none.
        last = await h.progress(task_id, RETAIN_EVENTS + 50)
        await eventually(lambda: all(s.sequences[-1:] == [last] for s in fast), "fast streams")
        assert slow.sequences == [1]
        go.set()
        await eventually(lambda: slow.sequences[-1:] == [last], "the slow stream catching up")
        assert slow.sequences == list(range(1, last + 1))
        assert all(s.sequences == list(range(1, last + 1)) for s in fast)
        await _stop([slow_task, *fast_tasks])

    run(engine, body)


def test_terminal_event_ends_the_stream_unless_the_task_was_retried(engine: Engine) -> None:
    async def body(h: Harness) -> None:
        task_id = await h.submit()
        await h.db(partial(h.store.cancel, task_id))  # 2: CANCELLED, terminal
        ended, ended_tasks = start(h, task_id, 3)
        await asyncio.wait_for(asyncio.gather(*ended_tasks), WAIT_SECONDS)
        assert all(s.ended and s.sequences == [1, 2] for s in ended)
        await h.db(partial(h.store.retry, task_id))  # 3: PENDING again
        h.hub.notify(task_id)
        again, again_tasks = start(h, task_id, 3)
        await eventually(lambda: all(s.sequences == [1, 2, 3] for s in again), "past the retry")
        assert not any(s.ended for s in again), "a terminal event followed by more is not the end"
        await h.db(partial(h.store.cancel, task_id))  # 4: terminal again
        h.hub.notify(task_id)
        await asyncio.wait_for(asyncio.gather(*again_tasks), WAIT_SECONDS)
        assert all(s.ended and s.sequences == [1, 2, 3, 4] for s in again)

    run(engine, body)


def test_unknown_task_is_not_found_for_every_stream(engine: Engine) -> None:
    async def body(h: Harness) -> None:
        streams, tasks = start(h, str(uuid.uuid4()), 3)
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_SECONDS)
        assert all(isinstance(s.error, NotFound) for s in streams)

    run(engine, body)
