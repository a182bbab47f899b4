"""RabbitMQ topology of the task pipeline, shared by the API server and the workers.

Work queue (``AGENTIC_TASK_QUEUE``, default ``agentic.tasks``): a durable **classic** queue
with ``x-max-priority`` 3, so PRIORITY_HIGH (3) messages overtake NORMAL (2) and LOW (1)
ones waiting in the queue. Classic, not quorum: RabbitMQ 3.10 (what we run) gives quorum
queues no message priorities at all; they arrived in 4.0. Messages are persistent,
published with publisher confirms, JSON only, and carry nothing but (task_id, attempt):
the database holds the spec and the status.

Dead letters: the work queue dead-letters into ``<queue>.dlx`` (direct), bound to the
durable ``<queue>.dlq``. Workers reject a message there when its attempt kept losing its
worker (see ``core.tasks._attempts``) after failing the task in the database; the DLQ
is for operators to inspect, nothing consumes it.

Event notifications: after committing task events, workers publish ``{"task_id",
"sequence"}`` (transient, JSON) to the fanout exchange ``AGENTIC_TASK_EVENTS_EXCHANGE``
(default ``agentic.task-events``). Every API server consumes it through its own exclusive,
auto-delete queue and wakes its WatchTask streams of that task, which then read the
events from the database. A lost or duplicated notification costs latency, never
correctness: watchers read by sequence number and also poll at the heartbeat interval.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from core.backoff import Backoff, CoolDown
from core.tasks._outbox import OutboxItem
from core.tasks._wire import celery_task_name

log = logging.getLogger(__name__)

MAX_PRIORITY = 3  # PRIORITY_LOW=1, NORMAL=2, HIGH=3 map one to one onto AMQP priorities
_CONNECT_TIMEOUT_SECONDS = 2.0
_PUBLISH_TIMEOUT_SECONDS = 5.0
_COOL_DOWN_SECONDS = 1.0
_DRAIN_SECONDS = 0.5
# The notification listener's reconnects (the publisher instead cools down for a fixed
# _COOL_DOWN_SECONDS: the outbox relay retries what it did not confirm on its own interval).
_RECONNECT = Backoff(first_seconds=0.2, max_seconds=5.0)
# Publishes per confirm wait: bounds what one broken batch leaves to the relay.
_MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where the pipeline's messages go (the same values on servers and workers)."""

    url: str
    """AMQP URL of the broker (AGENTIC_BROKER_URL)."""
    queue: str
    """Name of the work queue (AGENTIC_TASK_QUEUE)."""
    events_exchange: str
    """Fanout exchange of event notifications (AGENTIC_TASK_EVENTS_EXCHANGE)."""


def work_queue(name: str) -> Queue:
    """The durable classic priority work queue, dead-lettering into ``<name>.dlx``."""
    return Queue(
        name,
        Exchange(name, type="direct", durable=True),
        routing_key=name,
        durable=True,
        max_priority=MAX_PRIORITY,
        queue_arguments={
            "x-queue-type": "classic",
            "x-dead-letter-exchange": f"{name}.dlx",
            "x-dead-letter-routing-key": f"{name}.dlq",
        },
    )


def dead_letter_queue(name: str) -> Queue:
    """The durable queue that keeps messages rejected from the work queue ``name``."""
    return Queue(
        f"{name}.dlq",
        Exchange(f"{name}.dlx", type="direct", durable=True),
        routing_key=f"{name}.dlq",
        durable=True,
    )


def events_exchange(name: str) -> Exchange:
    """The fanout exchange of event notifications."""
    return Exchange(name, type="fanout", durable=True)


def declare_topology(connection: Any, settings: BrokerSettings) -> None:
    """Declare the work queue, its dead-letter exchange and queue, and the events exchange."""
    channel = connection.default_channel
    dead_letter_queue(settings.queue).bind(channel).declare()
    work_queue(settings.queue).bind(channel).declare()
    events_exchange(settings.events_exchange).bind(channel).declare()


def configure_celery(app: Any, settings: BrokerSettings) -> None:
    """The Celery settings every process of the pipeline shares (see workers/app.py)."""
    app.conf.update(
        broker_url=settings.url,
        # Publisher confirms: a publish returns only once the broker has the message.
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=_CONNECT_TIMEOUT_SECONDS,
        task_queues=[work_queue(settings.queue)],
        task_default_queue=settings.queue,
        task_default_exchange=settings.queue,
        task_default_routing_key=settings.queue,
        task_create_missing_queues=False,
        task_queue_max_priority=MAX_PRIORITY,
        task_default_priority=2,
        task_default_delivery_mode="persistent",
        task_serializer="json",
        accept_content=["json"],
        # The database is the source of truth for status; Celery stores no results.
        result_backend=None,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        # At-least-once: ack after the task ran, requeue when the worker process died.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A broker blip must not cancel running tasks: their claim lives in the database and
        # their result is recorded there. Celery 6 flips this default to True; pin it.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )


def publish_run(
    app: Any, producer: Any, settings: BrokerSettings, item: OutboxItem, *, declared: bool = False
) -> None:
    """Publish "run attempt ``item.attempt`` of ``item.task_id``" (raises when not confirmed;
    on TaskPublisher's channel, which collects confirms per batch, once written).

    ``declared``: the caller ran ``declare_topology`` on this connection, so kombu need
    not check the queue's declaration per message.
    """
    countdown = (item.not_before - datetime.now(UTC)).total_seconds()
    app.send_task(
        celery_task_name(item.kind),
        args=[item.task_id, item.attempt],
        queue=settings.queue,
        routing_key=settings.queue,
        priority=item.priority,
        countdown=countdown if countdown > 0 else None,
        producer=producer,
        # None: kombu declares the queue once per channel (and copies it per message).
        declare=[] if declared else None,
        retry=False,
        ignore_result=True,
        timeout=_PUBLISH_TIMEOUT_SECONDS,
        confirm_timeout=_PUBLISH_TIMEOUT_SECONDS,
    )


# What a publisher calls back with once a batch is settled: one flag per item, True when
# the broker confirmed it.
Settled = Callable[[list[bool]], None]


class TaskPublisher:
    """Confirmed publishes of work messages over one connection, in a dedicated thread.

    ``publish_async`` only queues. The thread takes everything queued (up to
    ``_MAX_BATCH`` items), publishes it back to back on a channel in confirm mode, then
    waits once for the broker's acks of the whole batch (RabbitMQ acks several delivery
    tags with one ``multiple`` ack). Callers that arrive meanwhile form the next batch, so
    under load one confirm round trip serves many publishes; a lone publish costs what it
    did with a wait per message.

    ``forget``, when given, gets the outbox ids of each batch's confirmed items in the
    publishing thread, before any caller hears back: one call (one DELETE) per batch, and
    no extra hop through another thread. If it raises, the rows stay and the relay
    publishes them again (a duplicate message is harmless).
    """

    def __init__(
        self, settings: BrokerSettings, *, forget: Callable[[list[int]], None] | None = None
    ) -> None:
        self._settings = settings
        self._forget = forget
        self._app = Celery("agentic-api", set_as_current=False)
        configure_celery(self._app, settings)
        self._jobs: queue.SimpleQueue[tuple[list[OutboxItem], Settled] | None] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Owned by the publishing thread alone:
        self._connection: Any = None
        self._producer: Any = None
        self._next_tag = 0  # delivery tag of the newest publish on the channel
        self._unsettled: dict[int, bool | None] = {}  # tag -> None until (n)acked
        # After a failure, skip the broker for a while: an outage must not make every
        # submit wait out a connect timeout (the relay publishes once it is back).
        self._cool_down = CoolDown(_COOL_DOWN_SECONDS)

    @property
    def forgets(self) -> bool:
        """True when this publisher deletes the outbox rows it got confirms for."""
        return self._forget is not None

    def publish_async(self, items: list[OutboxItem], settled: Settled) -> None:
        """Queue ``items``; ``settled`` is called from the publishing thread with one flag
        per item (True: confirmed). It must not block."""
        with self._start_lock:
            if self._closed:
                settled([False] * len(items))
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="task-publish", daemon=True)
                self._thread.start()
            self._jobs.put((items, settled))

    def publish(self, item: OutboxItem) -> bool:
        """Publish one outbox item and wait; True once the broker confirmed it."""
        done = threading.Event()
        result: list[bool] = []

        def settled(flags: list[bool]) -> None:
            result.extend(flags)
            done.set()

        self.publish_async([item], settled)
        done.wait()
        return result[0]

    def close(self, timeout_seconds: float = 10.0) -> None:
        """Settle what is queued, then close the connection."""
        with self._start_lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._jobs.put(None)
            thread.join(timeout_seconds)

    def _run(self) -> None:
        stop = False
        while not stop:
            job = self._jobs.get()
            if job is None:
                break
            jobs = [job]
            count = len(job[0])
            while count < _MAX_BATCH:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
                count += len(more[0])
            batch = [item for items, _ in jobs for item in items]
            flags = self._publish_batch(batch)
            confirmed = [item.id for item, ok in zip(batch, flags, strict=True) if ok]
            if self._forget is not None and confirmed:
                try:
                    self._forget(confirmed)
                except Exception:
                    log.warning(
                        "confirmed outbox rows not deleted (relay republishes)", exc_info=True
                    )
            start = 0
            for items, settled in jobs:
                try:
                    settled(flags[start : start + len(items)])
                except Exception:  # a caller's callback must not stop the publisher
                    log.exception("publish callback failed")
                start += len(items)
        self._reset()

    def _publish_batch(self, items: list[OutboxItem]) -> list[bool]:
        if self._cool_down.active:
            return [False] * len(items)
        tags: list[int] = []
        try:
            if self._producer is None:
                self._connect()
            for item in items:
                self._next_tag += 1
                self._unsettled[self._next_tag] = None
                tags.append(self._next_tag)
                publish_run(self._app, self._producer, self._settings, item, declared=True)
            self._wait_for_confirms(time.monotonic() + _PUBLISH_TIMEOUT_SECONDS)
            flags = [self._unsettled.pop(tag) is True for tag in tags]
        except Exception:
            log.warning("publish of %d task message(s) not confirmed", len(items), exc_info=True)
            self._reset()
            self._cool_down.start()
            return [False] * len(items)
        if not all(flags):
            log.warning("broker refused %d of %d task message(s)", flags.count(False), len(flags))
        return flags

    def _connect(self) -> None:
        self._connection = self._app.connection_for_write()
        # No pause between the two tries (kombu sleeps 2 s by default): submits wait for
        # this thread, so a refused connection must fail at once.
        self._connection.ensure_connection(
            max_retries=1, interval_start=0, timeout=_CONNECT_TIMEOUT_SECONDS
        )
        declare_topology(self._connection, self._settings)
        channel = self._connection.channel()
        channel.confirm_select()
        # confirm_publish makes py-amqp wait for each message's ack inside basic_publish;
        # this channel publishes without waiting and collects the acks per batch instead.
        channel.basic_publish = channel._basic_publish
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._next_tag = 0
        self._unsettled.clear()
        self._producer = self._app.amqp.Producer(channel, auto_declare=False)

    def _settle(self, delivery_tag: int, multiple: bool, confirmed: bool) -> None:
        if multiple:
            for tag, state in self._unsettled.items():
                if tag <= delivery_tag and state is None:
                    self._unsettled[tag] = confirmed
        elif delivery_tag in self._unsettled:
            self._unsettled[delivery_tag] = confirmed

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, True)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, False)

    def _wait_for_confirms(self, deadline: float) -> None:
        while any(state is None for state in self._unsettled.values()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the broker did not confirm in time")
            # Reads frames (acks) and dispatches them to _on_ack/_on_nack.
            self._connection.drain_events(timeout=remaining)

    def _reset(self) -> None:
        self._producer = None
        self._unsettled.clear()
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:  # already broken; nothing more to release
                log.debug("release after failure", exc_info=True)
            self._connection = None


def notification(task_id: str, sequence: int) -> str:
    """The body of an event notification."""
    return json.dumps({"task_id": task_id, "sequence": sequence}, separators=(",", ":"))


def parse_notification(body: Any) -> tuple[str, int] | None:
    """(task_id, sequence) from a notification body, or None when it is not one."""
    try:
        # kombu hands over the decoded JSON (a dict); raw bytes/str when undecoded.
        data = body if isinstance(body, dict) else json.loads(body)
        return str(data["task_id"]), int(data["sequence"])
    except (ValueError, KeyError, TypeError):
        return None


class NotificationListener:
    """Consumes event notifications in a daemon thread; reconnects until stopped."""

    def __init__(self, settings: BrokerSettings, deliver: Callable[[str, int], None]) -> None:
        self._settings = settings
        self._deliver = deliver
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-events", daemon=True)

    @property
    def connected(self) -> bool:
        """True while consuming."""
        return self._connected.is_set()

    def start(self) -> None:
        """Start the consumer thread."""
        self._thread.start()

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Stop consuming; wait a bounded time for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_seconds)

    def _on_message(self, body: Any, message: Any) -> None:
        parsed = parse_notification(body)
        if parsed is not None:
            self._deliver(*parsed)

    def _run(self) -> None:
        delays = _RECONNECT.delays()
        while not self._stop.is_set():
            try:
                self._consume()
                delays = _RECONNECT.delays()  # it was consuming: a new outage starts afresh
            except Exception:
                log.warning("task event notifications: broker connection lost", exc_info=True)
            self._connected.clear()
            if self._stop.wait(next(delays)):  # a stop request ends the wait at once
                return

    def _consume(self) -> None:
        exchange = events_exchange(self._settings.events_exchange)
        queue = Queue(
            f"{self._settings.events_exchange}.{uuid.uuid4().hex[:12]}",
            exchange,
            exclusive=True,
            auto_delete=True,
            durable=False,
        )
        with Connection(
            self._settings.url, connect_timeout=_CONNECT_TIMEOUT_SECONDS, heartbeat=10
        ) as connection:
            connection.ensure_connection(max_retries=1, timeout=_CONNECT_TIMEOUT_SECONDS)
            channel = connection.channel()
            exchange.bind(channel).declare()
            with connection.Consumer(
                queue, callbacks=[self._on_message], no_ack=True, accept=["json"]
            ):
                self._connected.set()
                while not self._stop.is_set():
                    try:
                        connection.drain_events(timeout=_DRAIN_SECONDS)
                    except TimeoutError:
                        connection.heartbeat_check()
