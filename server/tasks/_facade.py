"""Tasks as the servicer sees them: durable submits, operator actions, watch streams.

Submit commits the task, its first event and an outbox row in one transaction, and only
then tries the broker (the fast path: a confirmed publish deletes the outbox row). A
broker that is down does not fail the submit: the task is durable, and the relay, a
background loop in every server, publishes what the outbox still holds once it is due.
A database that is down fails the submit UNAVAILABLE: nothing was accepted.

Blocking work runs off the event loop: database calls in the shared database thread
pool, broker publishes in one dedicated thread (one connection, confirms in order).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from agentic.tasks.v1 import tasks_pb2
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from server._config import ServerConfig
from server.rpc import Unavailable
from server.tasks._broker import BrokerSettings, NotificationListener, TaskPublisher
from server.tasks._outbox import OutboxItem
from server.tasks._store import EVENT_BATCH, TaskStore
from server.tasks._watch import WatchHub
from server.tasks._wire import DOMAIN, TERMINAL_STATES, to_proto

log = logging.getLogger(__name__)

T = TypeVar("T")

_RELAY_BATCH = 100
_RELAY_RETRY_SECONDS = 1.0


def request_hash(kind: int, request: Message) -> str:
    """Canonical hash of a submit: the kind and the deterministic serialization."""
    digest = hashlib.sha256(f"{kind}:".encode())
    digest.update(request.SerializeToString(deterministic=True))
    return digest.hexdigest()


def _database_unavailable() -> Unavailable:
    return Unavailable(
        "the task database is unavailable; nothing was changed, try again",
        reason="DATABASE_UNAVAILABLE",
        domain=DOMAIN,
    )


class Tasks:
    """Async task operations over a store, a publisher and the watch hub."""

    def __init__(
        self,
        store: TaskStore,
        executor: ThreadPoolExecutor,
        *,
        publisher: TaskPublisher | None,
        listener_factory: Callable[[WatchHub], NotificationListener] | None,
        heartbeat_seconds: float,
        relay_interval_seconds: float,
        reap_after_seconds: float,
    ) -> None:
        self._store = store
        self._executor = executor
        self._publisher = publisher
        self._broker_executor = ThreadPoolExecutor(1, thread_name_prefix="task-publish")
        self.hub = WatchHub()
        self._listener = listener_factory(self.hub) if listener_factory is not None else None
        self._heartbeat_seconds = heartbeat_seconds
        self._relay_interval_seconds = relay_interval_seconds
        self._reap_after_seconds = reap_after_seconds
        self._stopping = asyncio.Event()
        self._relay: asyncio.Task[None] | None = None

    @classmethod
    def from_config(
        cls, engine: Engine, executor: ThreadPoolExecutor, config: ServerConfig
    ) -> Tasks:
        """Tasks on ``engine`` with the broker and timings of ``config``."""
        settings = BrokerSettings(
            url=config.broker_url,
            queue=config.task_queue,
            events_exchange=config.task_events_exchange,
        )
        enabled = bool(config.broker_url)
        return cls(
            TaskStore(engine),
            executor,
            publisher=TaskPublisher(settings) if enabled else None,
            listener_factory=(
                (lambda hub: NotificationListener(settings, hub.notify_threadsafe))
                if enabled
                else None
            ),
            heartbeat_seconds=config.watch_heartbeat_seconds,
            relay_interval_seconds=config.outbox_relay_interval_seconds,
            reap_after_seconds=config.task_reap_after_seconds,
        )

    def start(self) -> None:
        """Start the outbox relay and the notification listener (on the running loop)."""
        self.hub.bind(asyncio.get_running_loop())
        if self._listener is not None:
            self._listener.start()
        self._relay = asyncio.create_task(self._relay_forever(), name="task-outbox-relay")

    async def close(self) -> None:
        """Stop the relay and the listener, close the broker connection."""
        self._stopping.set()
        if self._relay is not None:
            await asyncio.gather(self._relay, return_exceptions=True)
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        if self._publisher is not None:
            publisher = self._publisher
            await asyncio.get_running_loop().run_in_executor(self._broker_executor, publisher.close)
        self._broker_executor.shutdown(wait=True)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        except (OperationalError, InterfaceError, PoolTimeoutError) as exc:
            log.warning("task database call failed: %s", exc)
            raise _database_unavailable() from None

    async def _publish(self, items: list[OutboxItem]) -> None:
        """Publish, then forget confirmed rows; failed rows wait for the relay."""
        if self._publisher is None or not items:
            return
        publisher = self._publisher
        loop = asyncio.get_running_loop()
        confirmed: list[int] = []
        failed: list[int] = []
        for item in items:
            ok = await loop.run_in_executor(self._broker_executor, publisher.publish, item)
            (confirmed if ok else failed).append(item.id)
        if confirmed:
            await self._db(self._store.published, confirmed)
        if failed:
            await self._db(self._store.publish_failed, failed, _RELAY_RETRY_SECONDS)

    async def _publish_quietly(self, item: OutboxItem | None) -> None:
        # The change is committed: a failure here is the relay's to repair, not the caller's.
        if item is None:
            return
        try:
            await self._publish([item])
        except Exception:
            log.warning("fast-path publish of task %s failed", item.task_id, exc_info=True)

    # --- RPCs -------------------------------------------------------------------------

    async def submit(
        self,
        *,
        kind: int,
        spec: Message,
        request: Message,
        owner_id: str,
        priority: int,
        request_id: str,
    ) -> tasks_pb2.Task:
        """Accept a task durably (idempotent on request_id); OK means it was committed."""
        submitted = await self._db(
            self._store.submit,
            kind=kind,
            spec=spec.SerializeToString(deterministic=True),
            owner_id=owner_id,
            priority=priority,
            request_id=request_id,
            request_hash=request_hash(kind, request),
        )
        await self._publish_quietly(submitted.publish)
        return to_proto(submitted.record)

    async def get(self, task_id: str) -> tasks_pb2.Task:
        """One task; NOT_FOUND when absent."""
        return to_proto(await self._db(self._store.get, task_id))

    async def list_tasks(self, request: tasks_pb2.ListTasksRequest) -> tasks_pb2.ListTasksResponse:
        """One page, newest first."""
        page = await self._db(
            self._store.page,
            page_size=request.page_size,
            page_token=request.page_token,
            state=request.state,
            kind=request.kind,
            owner_id=request.owner_id,
        )
        return tasks_pb2.ListTasksResponse(
            tasks=[to_proto(r) for r in page.records], next_page_token=page.next_page_token
        )

    async def cancel(self, task_id: str) -> tasks_pb2.Task:
        """Cancel now (not started) or ask the running attempt to stop."""
        changed = await self._db(self._store.cancel, task_id)
        self.hub.notify(task_id)
        return to_proto(changed.record)

    async def retry(self, task_id: str) -> tasks_pb2.Task:
        """Run a failed or cancelled task again as a new attempt."""
        changed = await self._db(self._store.retry, task_id)
        self.hub.notify(task_id)
        await self._publish_quietly(changed.publish)
        return to_proto(changed.record)

    async def watch(
        self, task_id: str, after_sequence: int
    ) -> AsyncIterator[tasks_pb2.WatchTaskResponse]:
        """Events after ``after_sequence``, then live ones; ends after the terminal event.

        The stream ends once it has sent every event of a task in a terminal state, so a
        watcher of an ended task gets the rest of the history and the end at once.
        """
        last = after_sequence
        idle = False
        with self.hub.subscribe(task_id) as wake:
            while True:
                wake.clear()  # before reading: a notification from now on wakes us again
                events, record = await self._db(self._store.events_after, task_id, last)
                for data in events:
                    event = tasks_pb2.TaskEvent.FromString(data)
                    last = event.sequence
                    yield tasks_pb2.WatchTaskResponse(event=event)
                if len(events) == EVENT_BATCH:
                    continue  # more history to replay
                if record.state in TERMINAL_STATES and last >= record.last_sequence:
                    return
                if events:
                    idle = False
                elif idle:
                    stamp = timestamp_pb2.Timestamp()
                    stamp.FromDatetime(datetime.now(UTC))
                    yield tasks_pb2.WatchTaskResponse(
                        heartbeat=tasks_pb2.Heartbeat(
                            time=stamp, last_sequence=max(record.last_sequence, last)
                        )
                    )
                try:
                    await asyncio.wait_for(wake.wait(), self._heartbeat_seconds)
                    idle = False
                except TimeoutError:
                    # Nothing woke us for a whole interval: poll the database as a backstop
                    # (lost notification) and send a heartbeat if it has nothing new.
                    idle = True

    # --- relay ------------------------------------------------------------------------

    async def _relay_forever(self) -> None:
        reap_every = max(1, round(self._reap_after_seconds / 4 / self._relay_interval_seconds))
        tick = 0
        while not self._stopping.is_set():
            try:
                items: list[OutboxItem] = []
                if self._publisher is not None:
                    items = await self._db(self._store.due_publishes, _RELAY_BATCH)
                if items:
                    log.info("relaying %d unconfirmed task publish(es)", len(items))
                    await self._publish(items)
                if tick % reap_every == 0:
                    reaped = await self._db(
                        self._store.reap_abandoned,
                        expired_for_seconds=self._reap_after_seconds,
                        limit=_RELAY_BATCH,
                    )
                    if reaped:
                        log.warning("re-queued %d task(s) whose worker vanished", reaped)
            except Exception:
                log.warning("outbox relay pass failed", exc_info=True)
            tick += 1
            try:
                await asyncio.wait_for(self._stopping.wait(), self._relay_interval_seconds)
            except TimeoutError:
                continue
