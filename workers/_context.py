"""What task code sees while it runs: progress reporting and cooperative cancellation."""

from __future__ import annotations

from collections.abc import Callable

from server.tasks import AttemptStore


class TaskCancelled(Exception):
    """Raised by ``raise_if_cancelled``: the task stops and ends CANCELLED."""


class ClaimLost(Exception):
    """This copy no longer holds the attempt (taken over or ended): stop, write nothing."""


class PermanentError(Exception):
    """A failure that retrying cannot fix: the task ends FAILED at once.

    ``reason`` becomes the ErrorInfo reason of the task's google.rpc.Status error.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class TransientError(Exception):
    """A failure worth retrying (a dependency blinked): retried with backoff, then FAILED."""


class TaskContext:
    """Handed to a task function with its spec; every call goes to the database."""

    def __init__(
        self,
        *,
        task_id: str,
        attempt: int,
        worker: str,
        store: AttemptStore,
        lease_seconds: float,
        notify: Callable[[str, int], None],
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self._worker = worker
        self._store = store
        self._lease_seconds = lease_seconds
        self._notify = notify

    def report_progress(self, fraction: float, message: str) -> None:
        """Record progress (an event watchers see) and extend the claim's lease.

        Raises ClaimLost when this copy no longer holds the attempt.
        """
        record = self._store.progress(
            self.task_id,
            self.attempt,
            worker=self._worker,
            fraction=min(max(fraction, 0.0), 1.0),
            message=message,
            lease_seconds=self._lease_seconds,
        )
        if record is None:
            raise ClaimLost(self.task_id)
        self._notify(self.task_id, record.last_sequence)

    def cancelled(self) -> bool:
        """True once CancelTask asked this task to stop."""
        return self._store.cancel_requested(self.task_id)

    def raise_if_cancelled(self) -> None:
        """Raise TaskCancelled when CancelTask asked this task to stop."""
        if self.cancelled():
            raise TaskCancelled(self.task_id)
