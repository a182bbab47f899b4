"""Running one delivered message: claim, run under a watchdog, finish exactly once.

``execute`` is free of Celery plumbing: it returns a Verdict (acknowledge, come back
later, dead-letter) that the Celery task in ``workers.app`` turns into ack / retry /
reject. The message carries only (task_id, attempt); the spec comes from the database.

A no-op attempt costs two writes: the claim (one read, one write) and the finish. The
record each write returns is handed to the next (through the TaskContext), so progress
and the finish re-read the row only when another writer got in between.

The watchdog is one long-lived thread per process (``Watchdogs``) beside the task code,
in the same (prefork child) process; starting an attempt only registers it. Every third
of the claim lease after it started (at most every second) it renews the attempt's lease
and looks at the task:

- CANCELLING for longer than the cancel grace: the task code did not stop cooperatively,
  so the watchdog ends the task CANCELLED (conditional on the claim) and kills its own
  process. Celery's parent sees the child die, requeues the message (reject on worker
  lost), and the redelivered copy finds the task ended and is acknowledged.
- Running past the kind's hard limit: the same, ending the task FAILED (DEADLINE_EXCEEDED).
- The claim is gone (another copy took over after this one stalled for a whole lease):
  the process kills itself too, so two copies never keep running side by side.

Killing the process is the only hard stop Python offers for arbitrary code; it needs the
prefork pool (the default, and what ``python -m workers`` runs), where it costs one child.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from google.rpc import code_pb2
from sqlalchemy import Engine

from core.objects import ObjectStore
from core.tasks import AttemptStore, ClaimOutcome, OutboxItem, TaskRecord, error_status
from workers import _metrics as metrics
from workers._cache_reader import CacheReader
from workers._context import (
    ClaimLost,
    PermanentError,
    TaskCancelled,
    TaskContext,
    WorkSettings,
)
from workers._metrics import Ending
from workers._outputs import OutputStore
from workers._registry import Registration
from workers._rule_sets import RuleSets

log = logging.getLogger(__name__)


class Verdict(enum.Enum):
    """What to do with the message once ``execute`` returned."""

    ACK = "ack"
    LATER = "later"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict, and for LATER how long to wait before the message comes back."""

    verdict: Verdict
    countdown_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Runtime:
    """Per-process dependencies of ``execute``."""

    store: AttemptStore
    lease_seconds: float
    cancel_grace_seconds: float
    max_deliveries: int
    notify: Callable[[str, int], None]
    """Publish an event notification (task_id, sequence); must not raise."""
    publish: Callable[[OutboxItem], bool]
    """Publish a work message with its countdown; True once the broker confirmed it."""
    kill_self: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGKILL)
    watchdogs: Watchdogs = field(default_factory=lambda: Watchdogs())
    """The process's watchdog thread (started on the first attempt)."""
    objects: ObjectStore | None = None
    """Where the artifacts that specs reference are read from."""
    outputs: OutputStore | None = None
    """Where the artifacts that tasks produce are written (same store, and the database)."""
    work: WorkSettings = field(default_factory=lambda: WorkSettings())
    """Bounds and places of the tasks' local work."""
    database: Engine | None = None
    """The worker's database, for kinds that read project data (``TaskContext.database``)."""
    rule_sets: RuleSets | None = None
    """The process's rule-set reads (``TaskContext.rule_sets``)."""
    cache: CacheReader | None = None
    """The process's cache sidecar client (``TaskContext.cache``; rule_sets reads through it)."""


def _claim_token() -> str:
    # Unique per claim, not per process: a redelivery to the same process is another copy.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def execute(
    runtime: Runtime,
    registration: Registration[Any, Any],
    task_id: str,
    attempt: int,
    *,
    due: datetime | None = None,
) -> Outcome:
    """Claim ``attempt`` of ``task_id`` and, if it is ours, run it to its single end.

    ``due``: when the message was due (a retry's countdown), for the queue-wait metric of
    attempts after the first.
    """
    worker = _claim_token()
    claim = runtime.store.claim(
        task_id,
        attempt,
        worker=worker,
        lease_seconds=runtime.lease_seconds,
        max_deliveries=runtime.max_deliveries,
    )
    if claim.outcome is ClaimOutcome.BUSY:
        # Another copy holds a live claim: come back just after its lease would expire.
        return Outcome(Verdict.LATER, claim.retry_in_seconds + 0.1)
    if claim.record is not None:
        # The claim may have changed the task (RUNNING, or ended a dead holder's attempt);
        # a notification too many only makes watchers re-read.
        runtime.notify(task_id, claim.record.last_sequence)
    if claim.outcome is ClaimOutcome.POISONED:
        log.error(
            "task %s attempt %d keeps losing its worker: failed, dead-lettered", task_id, attempt
        )
        metrics.dead_lettered(registration.kind)
        return Outcome(Verdict.DEAD_LETTER)
    if claim.outcome is ClaimOutcome.DONE:
        return Outcome(Verdict.ACK)
    assert claim.record is not None
    begin = time.monotonic()
    metrics.started(
        registration.kind,
        ready=_ready_time(claim.record, attempt, due),
        start=claim.record.claim_time or datetime.now(UTC),
    )
    spec = registration.spec_type.FromString(claim.record.spec)
    context = TaskContext(
        task_id=task_id,
        attempt=attempt,
        worker=worker,
        store=runtime.store,
        lease_seconds=runtime.lease_seconds,
        notify=runtime.notify,
        record=claim.record,
        objects=runtime.objects,
        outputs=runtime.outputs,
        work=(
            replace(runtime.work, duckdb_memory_limit_mib=registration.limits.memory_mib)
            if registration.limits.memory_mib
            else runtime.work
        ),
        database=runtime.database,
        rule_sets=runtime.rule_sets,
        cache=runtime.cache,
    )
    watch = runtime.watchdogs.watch(Watch(runtime, registration, task_id, attempt, worker))
    result: bytes | None = None
    error: bytes | None = None
    cancelled = False
    retry_error: bytes | None = None
    try:
        try:
            result = registration.run(spec, context).SerializeToString()
        finally:
            # Before the final write: the watchdog must not see it as lost.
            runtime.watchdogs.unwatch(watch)
    except TaskCancelled:
        cancelled = True
    except ClaimLost:
        log.warning("task %s attempt %d: claim lost, stopping without writing", task_id, attempt)
        return Outcome(Verdict.ACK)
    except PermanentError as exc:
        error = error_status(exc.code, exc.message, reason=exc.reason, metadata=exc.metadata)
    except SoftTimeLimitExceeded:
        error = error_status(
            code_pb2.DEADLINE_EXCEEDED,
            f"attempt exceeded its soft time limit of {registration.limits.soft_seconds:g}s",
            reason="TASK_TIMED_OUT",
        )
    except registration.retry.transient as exc:
        retry_error = error_status(
            code_pb2.UNAVAILABLE, str(exc) or type(exc).__name__, reason="TASK_TRANSIENT_ERROR"
        )
    except Exception as exc:
        # A defect in the task code: fail without retrying, and keep internals in the log.
        log.exception("task %s attempt %d crashed", task_id, attempt)
        error = error_status(
            code_pb2.INTERNAL, f"task crashed: {type(exc).__name__}", reason="TASK_CRASHED"
        )
    if retry_error is not None:
        return _retry_or_fail(
            runtime, context, registration, claim.record.auto_retries, worker, retry_error, begin
        )
    record = runtime.store.finish(
        task_id,
        attempt,
        worker=worker,
        result=result,
        error=error,
        cancelled=cancelled,
        known=context.record,
    )
    if record is None:
        log.warning(
            "task %s attempt %d: claim lost before the result was written", task_id, attempt
        )
    else:
        runtime.notify(task_id, record.last_sequence)
        ending = Ending.SUCCEEDED if result is not None else Ending.FAILED
        ending = Ending.REVOKED if cancelled else ending
        metrics.ended(registration.kind, ending, runtime_seconds=time.monotonic() - begin)
    return Outcome(Verdict.ACK)


def _ready_time(record: TaskRecord, attempt: int, due: datetime | None) -> datetime | None:
    """Since when the claimed attempt could have run: the task's creation for the first
    attempt, the message's due time for a retry; None for a takeover (a dead worker's
    attempt claimed again: its wait was observed when it first started) or an unknown due
    time (a retry the relay published after it was due carries none)."""
    if record.deliveries > 1:
        return None
    return record.create_time if attempt == 1 else due


def _retry_or_fail(
    runtime: Runtime,
    context: TaskContext,
    registration: Registration[Any, Any],
    retries_so_far: int,
    worker: str,
    error: bytes,
    begin: float,
) -> Outcome:
    task_id, attempt = context.task_id, context.attempt
    if retries_so_far >= registration.retry.max_retries:
        exhausted = error_status(
            code_pb2.UNAVAILABLE,
            f"transient failure persisted through {retries_so_far} automatic retries",
            reason="TASK_RETRIES_EXHAUSTED",
        )
        record = runtime.store.finish(
            task_id, attempt, worker=worker, error=exhausted, known=context.record
        )
        if record is not None:
            runtime.notify(task_id, record.last_sequence)
            metrics.ended(
                registration.kind, Ending.FAILED, runtime_seconds=time.monotonic() - begin
            )
        return Outcome(Verdict.ACK)
    delay = registration.retry.delay_seconds(retries_so_far + 1)
    retry = runtime.store.schedule_retry(
        task_id, attempt, worker=worker, error=error, delay_seconds=delay
    )
    if retry is None:
        record = runtime.store.get(task_id)
        if record is not None:
            runtime.notify(task_id, record.last_sequence)
        return Outcome(Verdict.ACK)
    runtime.notify(task_id, retry.record.last_sequence)
    metrics.ended(registration.kind, Ending.RETRIED, runtime_seconds=time.monotonic() - begin)
    if runtime.publish(retry.publish):
        runtime.store.published([retry.publish.id])
    # Otherwise the outbox row stays and a server's relay publishes it once due.
    return Outcome(Verdict.ACK)


# A watchdog thread without attempts to watch for this long ends; the next attempt starts
# another. Long enough that a busy worker keeps one thread, short enough that idle test
# runtimes do not accumulate sleeping threads.
_IDLE_EXIT_SECONDS = 30.0
# How long the thread sleeps when it has nothing due: the longest check interval, so an
# attempt registered meanwhile (due one interval after its start) is never checked late.
_MAX_INTERVAL_SECONDS = 1.0


class Watch:
    """One running attempt under the watchdog: its lease renewals and hard stops."""

    def __init__(
        self,
        runtime: Runtime,
        registration: Registration[Any, Any],
        task_id: str,
        attempt: int,
        worker: str,
    ) -> None:
        self._runtime = runtime
        self.store = runtime.store
        self._hard_seconds = registration.limits.hard_seconds
        self._kind = registration.kind
        self._task_id = task_id
        self._attempt = attempt
        self._worker = worker
        self._begin = time.monotonic()
        # A third of the lease: two renewals may fail before the lease lapses. Capped so
        # cancel grace and hard limits are enforced within about a second.
        self.interval = min(runtime.lease_seconds / 3, _MAX_INTERVAL_SECONDS)
        self.due = self._begin + self.interval
        self.stopped = False
        """Set when the attempt's code returned (or this watch killed it): no more checks."""
        self.busy = threading.Lock()
        """Held during a check, so that ``unwatch`` can wait one out."""

    def check(self) -> bool:
        """One look; True when the process is being stopped."""
        runtime = self._runtime
        record = runtime.store.renew(
            self._task_id, self._attempt, worker=self._worker, lease_seconds=runtime.lease_seconds
        )
        if self.stopped:
            return True  # the attempt finished while we were renewing
        if record is None:
            log.error("task %s: claim lost while running; stopping this copy", self._task_id)
            runtime.kill_self()
            return True
        now = datetime.now(UTC)
        grace = timedelta(seconds=runtime.cancel_grace_seconds)
        if record.cancel_time is not None and now - record.cancel_time >= grace:
            log.warning(
                "task %s ignored cancellation for %s: stopping it hard", self._task_id, grace
            )
            ended = runtime.store.finish(
                self._task_id, self._attempt, worker=self._worker, cancelled=True
            )
            return self._kill(ended.last_sequence if ended else None, Ending.REVOKED)
        if time.monotonic() - self._begin >= self._hard_seconds:
            log.error(
                "task %s exceeded its hard limit of %gs: stopping it",
                self._task_id,
                self._hard_seconds,
            )
            error = error_status(
                code_pb2.DEADLINE_EXCEEDED,
                f"attempt exceeded its hard time limit of {self._hard_seconds:g}s",
                reason="TASK_TIMED_OUT",
            )
            ended = runtime.store.finish(
                self._task_id, self._attempt, worker=self._worker, error=error
            )
            return self._kill(ended.last_sequence if ended else None, Ending.FAILED)
        return False

    def _kill(self, sequence: int | None, ending: Ending) -> bool:
        if self.stopped:
            return True  # the task code finished first and wrote its own end
        if sequence is not None:
            self._runtime.notify(self._task_id, sequence)
            # Before the kill: the counter's file (multiprocess mode) outlives the process.
            metrics.ended(self._kind, ending, runtime_seconds=time.monotonic() - self._begin)
        self._runtime.kill_self()
        return True


class Watchdogs:
    """The watchdog thread of a process: checks every registered Watch when it is due.

    Registering and unregistering an attempt takes a lock and no thread start, so a
    short attempt costs the watchdog next to nothing; one that ends before its first
    check (a third of the lease) costs it no database work at all.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._watches: set[Watch] = set()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._wake_at = float("inf")
        # The stores this thread used: each keeps a connection per thread (see
        # AttemptStore), which this thread hands back when it ends.
        self._stores: dict[int, AttemptStore] = {}
        self._stopping = False

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """End the thread now, handing back the connections it kept (shutdown, tests)."""
        with self._lock:
            thread, self._stopping = self._thread, True
            self._changed.notify()
        if thread is not None:
            thread.join(timeout_seconds)

    def watch(self, watch: Watch) -> Watch:
        """Start watching ``watch``'s attempt; returns it for ``unwatch``."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the thread stayed with the parent
                self._pid, self._thread = os.getpid(), None
            self._watches.add(watch)
            self._stores[id(watch.store)] = watch.store
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
            elif watch.due < self._wake_at:
                self._changed.notify()
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Stop watching (before the attempt's final write); waits out a check under way."""
        watch.stopped = True
        with watch.busy:
            pass
        with self._lock:
            self._watches.discard(watch)

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._lock:
                watches = list(self._watches)
                at = time.monotonic()
                if watches:
                    idle_since = at
                if self._stopping or (not watches and at - idle_since >= _IDLE_EXIT_SECONDS):
                    self._thread = None
                    stores, self._stores = self._stores, {}
                    break
            for watch in watches:
                if watch.due <= time.monotonic():
                    self._check(watch)
            with self._lock:
                wake_at = min(
                    (w.due for w in self._watches), default=time.monotonic() + _MAX_INTERVAL_SECONDS
                )
                self._wake_at = wake_at
                delay = wake_at - time.monotonic()
                if delay > 0:
                    self._changed.wait(delay)
                self._wake_at = float("inf")

        for store in stores.values():
            store.close()  # the connection this thread kept goes back to the pool

    def _check(self, watch: Watch) -> None:
        with watch.busy:
            if watch.stopped:
                return
            try:
                stopping = watch.check()
            except Exception:
                # The database blinked: the lease has two more chances before it lapses.
                log.warning("watchdog: check failed", exc_info=True)
                stopping = False
            watch.due = time.monotonic() + watch.interval
        if stopping:
            watch.stopped = True
            with self._lock:
                self._watches.discard(watch)
