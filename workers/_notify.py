"""Event notifications from a worker process: hints published without waiting on the broker.

A notification ("task T has events up to S") is a hint: API servers read the events from
the database and also poll, so a lost one costs latency and a duplicate costs a re-read.
Hence nothing here waits for the broker on the task's path:

- the publish goes out on a channel *without* publisher confirms (a confirm buys nothing
  for a hint and costs a broker round trip per message) as a transient message: a
  socket write of a few hundred bytes, bounded by a short send timeout should a blocked
  broker stop reading;
- connecting (and re-connecting) happens in a short-lived background thread; hints
  raised meanwhile wait for it, newest sequence per task only (a watcher re-reads from
  its own position, so only the newest matters), and are published once it connected;
- any failure drops the connection and what waits, and skips the broker for a cool-down,
  so an outage costs neither the task nor anything else a reconnect per report.

Publishing inline rather than from a long-lived publisher thread is deliberate: waking a
thread per notification costs several times the publish itself in CPU and GIL hand-offs.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange
from kombu.messaging import Producer

from core.backoff import CoolDown
from core.tasks import notification

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_SECONDS = 2.0
# A socket write to a broker that stopped reading (resource alarm) fails after this long
# instead of blocking the task; the connection is then dropped.
_WRITE_TIMEOUT_SECONDS = 0.2
COOL_DOWN_SECONDS = 5.0
"""After a failed connect or publish, skip the broker this long (hints are dropped)."""
# Hints kept while connecting: one per task, so only a process with this many tasks
# reporting during one connect attempt could reach it.
_MAX_WAITING = 1000


class Notifier:
    """Publishes event notifications to a fanout exchange; see the module docstring."""

    def __init__(self, broker_url: str, exchange: Exchange) -> None:
        self._url = broker_url
        self._exchange = exchange
        self._pid = 0
        self._lock = threading.Lock()
        self._producer: Any = None
        self._connection: Any = None
        self._connecting = False
        self._waiting: dict[str, int] = {}
        self._cool_down = CoolDown(COOL_DOWN_SECONDS)

    def notify(self, task_id: str, sequence: int) -> None:
        """Publish a notification if the broker is at hand; never waits for it, never raises."""
        if self._cool_down.active:
            return
        if self._pid != os.getpid():  # first use, or forked: nothing of the parent's is ours
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._producer = self._connection = None
            self._connecting = False
            self._waiting = {}
        with self._lock:
            if self._producer is None:
                self._wait(task_id, sequence)
                return
            try:
                self._publish(task_id, sequence)
            except Exception:
                log.debug("notification for task %s not published", task_id, exc_info=True)
                self._fail()

    def _wait(self, task_id: str, sequence: int) -> None:
        """(Lock held.) Keep the hint for after the connect; start one if none is under way."""
        if sequence > self._waiting.get(task_id, 0) and (
            task_id in self._waiting or len(self._waiting) < _MAX_WAITING
        ):
            self._waiting[task_id] = sequence
        if not self._connecting:
            self._connecting = True
            threading.Thread(target=self._connect, name="task-events-connect", daemon=True).start()

    def _connect(self) -> None:
        connection = Connection(
            self._url,
            connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            transport_options={"confirm_publish": False, "write_timeout": _WRITE_TIMEOUT_SECONDS},
        )
        try:
            connection.ensure_connection(max_retries=1, interval_start=0)
            channel = connection.channel()
            self._exchange.bind(channel).declare()
            producer = Producer(channel, exchange=self._exchange, auto_declare=False)
        except Exception:
            log.debug("event notifications: broker unreachable", exc_info=True)
            connection.collect()
            with self._lock:
                self._connecting = False
                self._waiting = {}
                self._cool_down.start()
            return
        with self._lock:
            self._connection, self._producer, self._connecting = connection, producer, False
            waiting, self._waiting = self._waiting, {}
            try:
                for task_id, sequence in waiting.items():
                    self._publish(task_id, sequence)
            except Exception:
                log.debug("event notifications not published", exc_info=True)
                self._fail()

    def _publish(self, task_id: str, sequence: int) -> None:
        """(Lock held.) One transient publish, no confirm."""
        self._producer.publish(
            notification(task_id, sequence),
            routing_key="",
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=1,
            retry=False,
        )

    def close(self) -> None:
        """Drop the connection (a later ``notify`` connects again)."""
        with self._lock:
            connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            connection.release()

    def _fail(self) -> None:
        """(Lock held.) Drop the connection without a closing handshake; cool down."""
        connection, self._connection, self._producer = self._connection, None, None
        self._cool_down.start()
        if connection is not None:
            try:
                connection.collect()  # closes the socket; sends nothing to the broker
            except Exception:
                log.debug("dropping the notification connection", exc_info=True)
