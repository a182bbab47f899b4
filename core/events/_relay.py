"""Publishing outboxed events: the writer's fast path, and a relay on every replica.

The writer publishes its events right after the commit (``publish_now``) and deletes the
rows the broker confirmed. Whatever is left (the broker was down, the request was
cancelled, the process died) is picked up by the relay of any replica once its
``relay_time`` has passed: it claims a batch (moving ``relay_time`` on, so two replicas
do not publish the same rows), publishes, deletes what was confirmed and makes the rest
due again. Once the broker is reachable again, events flow within the publisher's
cool-down plus one relay interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime

from prometheus_client import Gauge
from sqlalchemy import Engine

from core.events import _outbox
from core.events._outbox import Outboxed
from core.events._publisher import Publisher

log = logging.getLogger(__name__)

# Rows one relay pass takes; a relay that dies holding them frees them after the lease.
_BATCH = 256
_LEASE_SECONDS = 10.0

BACKLOG = Gauge(
    "agentic_event_outbox_backlog",
    "Domain events committed but not yet confirmed by the broker (as last seen by the relay).",
)


class EventRelay:
    """Publishes outboxed domain events through ``publisher``."""

    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        publisher: Publisher,
        *,
        interval_seconds: float,
    ) -> None:
        self._engine = engine
        self._executor = executor
        self._publisher = publisher
        self._interval = interval_seconds
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def publish_now(self, items: Sequence[Outboxed]) -> None:
        """The fast path (blocking): publish a write's events and forget the confirmed ones.

        Never raises: what is not confirmed stays in the outbox for the relay.
        """
        try:
            confirmed = [item.id for item in items if self._publisher.publish(item.event)]
            if confirmed:
                with self._engine.begin() as connection:
                    _outbox.remove(connection, confirmed)
        except Exception:  # the event is committed: the relay's to repair, not the caller's
            log.warning("fast-path event publish failed; the relay retries", exc_info=True)

    def relay_once(self) -> int:
        """One relay pass (blocking): publish the due rows; the number confirmed."""
        now = datetime.now(UTC)
        with self._engine.begin() as connection:
            items = _outbox.claim_due(connection, now, lease_seconds=_LEASE_SECONDS, limit=_BATCH)
        confirmed: list[int] = []
        failed: list[int] = []
        for item in items:
            # After one failure the publisher is cooling down: keep the order, try later.
            if not failed and self._publisher.publish(item.event):
                confirmed.append(item.id)
            else:
                failed.append(item.id)
        with self._engine.begin() as connection:
            _outbox.remove(connection, confirmed)
            _outbox.release(connection, failed, now)
            BACKLOG.set(_outbox.backlog(connection))
        if confirmed:
            log.info("relayed %d domain event(s)", len(confirmed))
        return len(confirmed)

    def start(self) -> None:
        """Run the relay on the running loop, outside any request's context."""
        self._task = asyncio.create_task(
            self._forever(), name="event-outbox-relay", context=contextvars.Context()
        )

    async def stop(self) -> None:
        """Stop the relay after its current pass."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _forever(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                await loop.run_in_executor(self._executor, self.relay_once)
            except Exception:  # database down: the rows wait; say so, keep going
                log.warning("event relay pass failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
