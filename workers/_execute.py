"""Running one delivered message: claim, run under a watchdog, finish exactly once.

``execute`` is free of Celery plumbing: it returns a Verdict (acknowledge, come back
later, dead-letter) that the Celery task in ``workers.app`` turns into ack / retry /
reject. The message carries only (task_id, attempt); the spec comes from the database.

The watchdog is a thread beside the task code in the same (prefork child) process. Every
third of the claim lease it renews the lease and looks at the task:

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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from google.rpc import code_pb2

from server.tasks import AttemptStore, ClaimOutcome, OutboxItem, error_status
from workers._context import ClaimLost, PermanentError, TaskCancelled, TaskContext
from workers._registry import Registration

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


def _claim_token() -> str:
    # Unique per claim, not per process: a redelivery to the same process is another copy.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def execute(
    runtime: Runtime, registration: Registration[Any, Any], task_id: str, attempt: int
) -> Outcome:
    """Claim ``attempt`` of ``task_id`` and, if it is ours, run it to its single end."""
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
        return Outcome(Verdict.DEAD_LETTER)
    if claim.outcome is ClaimOutcome.DONE:
        return Outcome(Verdict.ACK)
    assert claim.record is not None
    spec = registration.spec_type.FromString(claim.record.spec)
    context = TaskContext(
        task_id=task_id,
        attempt=attempt,
        worker=worker,
        store=runtime.store,
        lease_seconds=runtime.lease_seconds,
        notify=runtime.notify,
    )
    watchdog = Watchdog(runtime, registration, task_id, attempt, worker)
    watchdog.start()
    result: bytes | None = None
    error: bytes | None = None
    cancelled = False
    retry_error: bytes | None = None
    try:
        try:
            result = registration.run(spec, context).SerializeToString()
        finally:
            watchdog.stop()  # before the final write: the watchdog must not see it as lost
    except TaskCancelled:
        cancelled = True
    except ClaimLost:
        log.warning("task %s attempt %d: claim lost, stopping without writing", task_id, attempt)
        return Outcome(Verdict.ACK)
    except PermanentError as exc:
        error = error_status(code_pb2.UNKNOWN, exc.message, reason=exc.reason)
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
            runtime, registration, claim.record.auto_retries, task_id, attempt, worker, retry_error
        )
    record = runtime.store.finish(
        task_id, attempt, worker=worker, result=result, error=error, cancelled=cancelled
    )
    if record is None:
        log.warning(
            "task %s attempt %d: claim lost before the result was written", task_id, attempt
        )
    else:
        runtime.notify(task_id, record.last_sequence)
    return Outcome(Verdict.ACK)


def _retry_or_fail(
    runtime: Runtime,
    registration: Registration[Any, Any],
    retries_so_far: int,
    task_id: str,
    attempt: int,
    worker: str,
    error: bytes,
) -> Outcome:
    if retries_so_far >= registration.retry.max_retries:
        exhausted = error_status(
            code_pb2.UNAVAILABLE,
            f"transient failure persisted through {retries_so_far} automatic retries",
            reason="TASK_RETRIES_EXHAUSTED",
        )
        record = runtime.store.finish(task_id, attempt, worker=worker, error=exhausted)
        if record is not None:
            runtime.notify(task_id, record.last_sequence)
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
    if runtime.publish(retry.publish):
        runtime.store.published([retry.publish.id])
    # Otherwise the outbox row stays and a server's relay publishes it once due.
    return Outcome(Verdict.ACK)


class Watchdog:
    """Renews the claim and enforces cancel grace and the hard limit (see module doc)."""

    def __init__(
        self,
        runtime: Runtime,
        registration: Registration[Any, Any],
        task_id: str,
        attempt: int,
        worker: str,
    ) -> None:
        self._runtime = runtime
        self._hard_seconds = registration.limits.hard_seconds
        self._task_id = task_id
        self._attempt = attempt
        self._worker = worker
        self._stop = threading.Event()
        self._begin = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"watchdog-{task_id}", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (before the attempt's final write); waits for the thread."""
        self._stop.set()
        self._thread.join()

    def _interval(self) -> float:
        # A third of the lease: two renewals may fail before the lease lapses. Capped so
        # cancel grace and hard limits are enforced within about a second.
        return min(self._runtime.lease_seconds / 3, 1.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval()):
            try:
                if self._check():
                    return
            except Exception:
                # The database blinked: the lease has two more chances before it lapses.
                log.warning("watchdog of task %s: check failed", self._task_id, exc_info=True)

    def _check(self) -> bool:
        """One look; True when the process is being stopped."""
        runtime = self._runtime
        record = runtime.store.renew(
            self._task_id, self._attempt, worker=self._worker, lease_seconds=runtime.lease_seconds
        )
        if self._stop.is_set():
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
            return self._kill(ended.last_sequence if ended else None)
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
            return self._kill(ended.last_sequence if ended else None)
        return False

    def _kill(self, sequence: int | None) -> bool:
        if self._stop.is_set():
            return True  # the task code finished first and wrote its own end
        if sequence is not None:
            self._runtime.notify(self._task_id, sequence)
        self._runtime.kill_self()
        return True
