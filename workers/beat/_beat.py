"""The beat's loop: hold the leader lease, and while holding it fire every job when due.

Policy, in terms of the schedule's instants (``workers._schedule``):

- The leader fires each job at its latest scheduled instant at or before now, once; the
  fire's request_id is derived from job and instant, so whatever repeats it (a second
  leader for a moment, a retry after a lost reply, a new leader repeating its
  predecessor's last fire) is the same task.
- A new leader fires each job's most recent instant once, at once, and the following ones
  as they come: instants that passed while nobody led, other than the most recent, are
  skipped, not replayed. A periodic job's next run does what the skipped one would have
  done, and a backlog of probes (or backups) after an outage helps nobody.
- A fire that fails (API down, UNAVAILABLE beyond its deadline) is retried with backoff,
  same request_id, until it is submitted or the job's next instant supersedes it.
- Nothing fires while the lease is not valid by this process's monotonic clock.

Every fire, submitted or failed, is recorded in the audit log (``audit``: job, a summary
with the instant, request_id and task id or error, and the outcome: ``OK`` or the failed
submit's gRPC status code name, as for admin calls). A beat killed between a submit and
its audit row leaves that one fire unaudited; its task is there all the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from agentic.tasks.v1 import tasks_pb2
from prometheus_client import Counter, Gauge

from core.backoff import Backoff
from workers._leader import Lease
from workers._schedule import Entry, request_id
from workers.beat._client import SubmitError

__all__ = ["FIRES", "LAST_FIRE", "LEADER", "Beat", "Contender"]

_log = logging.getLogger(__name__)

LEADER = Gauge("agentic_scheduler_leader", "1 while this beat process holds the leader lease")
FIRES = Counter(
    "agentic_scheduler_fires_total",
    "Fires of periodic jobs by this process: submitted (the API accepted or already had the "
    "task) or failed (retried with backoff)",
    ["job", "outcome"],
)
LAST_FIRE = Gauge(
    "agentic_scheduler_last_fire_timestamp_seconds",
    "Scheduled instant (Unix time) of the job's last fire this process submitted",
    ["job"],
)

# A failed fire is tried again within a second at first, at most every 30 s.
_FIRE_RETRY = Backoff(first_seconds=1.0, max_seconds=30.0)
_MIN_WAIT_SECONDS = 0.01


class Contender(Protocol):
    """What the loop needs of a lease (``workers._leader.LeaderLease``)."""

    @property
    def holder(self) -> str:
        """This process's id in the lease."""
        ...

    def acquire(self) -> Lease | None:
        """Renew or take the lease; None while another holds it."""
        ...

    def release(self) -> bool:
        """Give the lease up if held."""
        ...


class Beat:
    """Fire ``entries`` through ``fire(job, request_id)`` while ``lease`` is held."""

    def __init__(
        self,
        entries: Sequence[Entry],
        lease: Contender,
        fire: Callable[[str, str], tasks_pb2.Task],
        *,
        renew_seconds: float,
        audit: Callable[[str, Mapping[str, str], str], None] = lambda job, summary, outcome: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries = [entry for entry in entries if not entry.paused]
        self._lease_of = lease
        self._fire = fire
        self._audit = audit
        self._renew = renew_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._lease: Lease | None = None
        self._next_poll = 0.0
        self._done: dict[str, datetime] = {}  # job -> instant submitted in this leadership
        self._retry_at: dict[str, float] = {}
        self._delays: dict[str, Iterator[float]] = {}
        for entry in entries:
            FIRES.labels(entry.job, "submitted")
            FIRES.labels(entry.job, "failed")
        LEADER.set(0)

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set, then give the lease up if held."""
        try:
            while not stop.is_set():
                stop.wait(self.step())
        finally:
            self.resign()

    def leading(self) -> bool:
        """The lease is held and still valid by the monotonic clock."""
        return self._lease is not None and self._monotonic() < self._lease.valid_until

    def step(self) -> float:
        """Poll the lease when due, fire what is due; the seconds until the next step."""
        if self._monotonic() >= self._next_poll:
            self._poll()
            self._next_poll = self._monotonic() + self._renew
        if not self.leading():
            LEADER.set(0)
            return max(self._next_poll - self._monotonic(), _MIN_WAIT_SECONDS)
        LEADER.set(1)
        now = self._clock()
        wake = self._next_poll
        for entry in self._entries:
            due = entry.latest(now)
            assert due is not None  # paused entries were dropped
            if self._done.get(entry.job) != due and self._monotonic() >= self._retry_at.get(
                entry.job, 0.0
            ):
                if not self.leading():
                    break
                self._fire_one(entry.job, due, now)
            following = entry.next_after(now)
            assert following is not None
            wake = min(wake, self._monotonic() + (following - self._clock()).total_seconds())
            if self._done.get(entry.job) != due:
                wake = min(wake, self._retry_at.get(entry.job, wake))
        return max(wake - self._monotonic(), _MIN_WAIT_SECONDS)

    def resign(self) -> None:
        """Release the lease if held (a graceful stop): a standby takes it at its next poll."""
        if self._lease is None:
            return
        self._lease = None
        LEADER.set(0)
        try:
            if self._lease_of.release():
                _log.info("gave up the scheduler lease")
        except Exception as exc:  # the lease then lapses by itself within its TTL
            _log.warning("could not release the scheduler lease: %s", exc)

    def _poll(self) -> None:
        try:
            lease = self._lease_of.acquire()
        except Exception as exc:
            # Keep acting on a lease still valid: nobody may take it before it expires.
            _log.warning("scheduler lease poll failed: %s", exc)
            return
        if lease is None:
            if self._lease is not None:
                _log.warning("lost the scheduler lease: another beat leads now")
            self._lease = None
            self._done.clear()
            return
        if lease.taken_over:
            _log.info("leading the schedule as %s (term %d)", self._lease_of.holder, lease.term)
            self._done.clear()  # fire each job's most recent instant once
        self._lease = lease

    def _fire_one(self, job: str, due: datetime, now: datetime) -> None:
        rid = request_id(job, due)
        summary = {"instant": due.isoformat(), "request_id": rid}
        try:
            task = self._fire(job, rid)
        except SubmitError as exc:
            self._audit(job, {**summary, "error": str(exc)}, exc.code.name)
            FIRES.labels(job, "failed").inc()
            delays = self._delays.setdefault(job, _FIRE_RETRY.delays())
            self._retry_at[job] = self._monotonic() + next(delays)
            _log.warning("fire of %s at %s failed, retrying: %s", job, due.isoformat(), exc)
            return
        self._audit(job, {**summary, "task_id": task.id}, "OK")
        self._done[job] = due
        self._retry_at.pop(job, None)
        self._delays.pop(job, None)
        FIRES.labels(job, "submitted").inc()
        LAST_FIRE.labels(job).set(due.timestamp())
        _log.info(
            "fired %s at %s (%.3fs late): task %s, request_id %s",
            job,
            due.isoformat(),
            (now - due).total_seconds(),
            task.id,
            rid,
        )
