"""What task code sees while it runs: progress reporting, cooperative cancellation, and
the artifacts its spec references."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agentic.artifacts.v1 import artifacts_pb2
from google.rpc import code_pb2
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from core.backup import BackupConfig
from core.objects import (
    CheckAhead,
    IntegrityError,
    ObjectMissingError,
    ObjectStore,
    ObjectStoreError,
    fetch,
)
from core.tasks import AttemptStore, TaskRecord
from workers._outputs import Output, OutputStore

if TYPE_CHECKING:
    from workers._cache_reader import CacheReader
    from workers._rule_sets import RuleSets

# How old the cancel flag a check answers from may be. Every write of the attempt
# (claim, progress) returns the task as it now is, so a task that reports progress learns
# of a cancellation at its next report; one that only checks reads the flag at most this
# often. Far below the cancel grace (seconds), so it costs cooperative stops nothing.
CANCEL_CHECK_SECONDS = 0.1


class TaskCancelled(Exception):
    """Raised by ``raise_if_cancelled``: the task stops and ends CANCELLED."""


class ClaimLost(Exception):
    """This copy no longer holds the attempt (taken over or ended): stop, write nothing."""


class PermanentError(Exception):
    """A failure that retrying cannot fix: the task ends FAILED at once.

    ``reason`` becomes the ErrorInfo reason of the task's google.rpc.Status error, and
    ``metadata`` its ErrorInfo metadata: what the reason is about, for a caller to act on
    (``{"column": "amount"}`` for a query naming a column the dataset lacks). ``code`` is
    the Status code: FAILED_PRECONDITION by default (the input is not as the work needs
    it: unreadable data, a missing artifact), INVALID_ARGUMENT when the spec itself is
    wrong (a query naming an unknown column); never UNKNOWN.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        metadata: Mapping[str, str] | None = None,
        code: int = code_pb2.FAILED_PRECONDITION,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata: Mapping[str, str] = dict(metadata or {})
        self.code = code


class TransientError(Exception):
    """A failure worth retrying (a dependency blinked): retried with backoff, then FAILED."""


@dataclass(frozen=True, slots=True)
class WorkSettings:
    """The worker's bounds for the work a task does locally (from WorkerConfig)."""

    duckdb_memory_limit_mib: int = 1024
    duckdb_threads: int = 2
    directory: str = ""
    """Where local files go; empty means the system's temp directory."""
    backup: BackupConfig = field(default_factory=BackupConfig)
    """Where the backup kind writes backups and what its prune keeps."""
    retention_task_max_age_seconds: int = 30 * 86400
    """The retention kind's task age when its spec names none."""


class TaskContext:
    """Handed to a task function with its spec; reports and checks go to the database."""

    def __init__(
        self,
        *,
        task_id: str,
        attempt: int,
        worker: str,
        store: AttemptStore,
        lease_seconds: float,
        notify: Callable[[str, int], None],
        record: TaskRecord | None = None,
        objects: ObjectStore | None = None,
        outputs: OutputStore | None = None,
        work: WorkSettings | None = None,
        database: Engine | None = None,
        rule_sets: RuleSets | None = None,
        cache: CacheReader | None = None,
    ) -> None:
        self.task_id = task_id
        self._cache = cache
        self._objects = objects
        self._outputs = outputs
        self.work = work or WorkSettings()
        """Bounds and places for the task's local work (DuckDB, temporary files)."""
        self._progress_lock = threading.Lock()
        self._database = database
        self._rule_sets = rule_sets
        self.attempt = attempt
        self._worker = worker
        self._store = store
        self._lease_seconds = lease_seconds
        self._notify = notify
        # The attempt's newest write (the claim's record first): the next write starts
        # from it instead of re-reading the row, and it answers cancel checks while fresh.
        self._record = record
        self._cancel_requested = record is not None and record.cancel_requested
        self._cancel_read_at = time.monotonic() if record is not None else float("-inf")
        self._checks: list[CheckAhead] = []  # artifact_file(check_ahead=True) still running

    @property
    def database(self) -> Engine:
        """The worker's database, for kinds that read project data (read-only queries;
        the attempt's own writes go through the context). On PostgreSQL the task's thread
        keeps a pooled connection for those writes: use short statements."""
        if self._database is None:
            raise PermanentError("this worker has no database for task code", reason="NO_DATABASE")
        return self._database

    @property
    def rule_sets(self) -> RuleSets:
        """The process's rule-set reads (through the cache sidecar, the database behind)."""
        if self._rule_sets is None:
            raise PermanentError("this worker cannot read rule sets", reason="NO_DATABASE")
        return self._rule_sets

    @property
    def cache(self) -> CacheReader:
        """The process's client of the cache sidecar (for kinds that fill the cache)."""
        if self._cache is None:
            raise PermanentError("this worker has no cache sidecar client", reason="NO_CACHE")
        return self._cache

    @property
    def record(self) -> TaskRecord | None:
        """The task as this attempt last wrote or read it (None before the first)."""
        return self._record

    def report_progress(self, fraction: float, message: str) -> None:
        """Record progress (an event) and extend the claim's lease.

        Raises ClaimLost when this copy no longer holds the attempt. Safe to call from a
        helper thread of the task (one report at a time).
        """
        with self._progress_lock:
            self._report(fraction, message)

    def _report(self, fraction: float, message: str) -> None:
        record = self._store.progress(
            self.task_id,
            self.attempt,
            worker=self._worker,
            fraction=min(max(fraction, 0.0), 1.0),
            message=message,
            lease_seconds=self._lease_seconds,
            known=self._record,
        )
        if record is None:
            raise ClaimLost(self.task_id)
        self._record = record
        self._cancel_requested = record.cancel_requested
        self._cancel_read_at = time.monotonic()
        self._notify(self.task_id, record.last_sequence)

    def cancelled(self) -> bool:
        """True once CancelTask asked this task to stop (known within CANCEL_CHECK_SECONDS)."""
        if self._cancel_requested:
            return True
        at = time.monotonic()
        if at - self._cancel_read_at >= CANCEL_CHECK_SECONDS:
            self._cancel_requested = self._store.cancel_requested(self.task_id)
            self._cancel_read_at = at
        return self._cancel_requested

    def raise_if_cancelled(self) -> None:
        """Raise TaskCancelled when CancelTask asked this task to stop."""
        if self.cancelled():
            raise TaskCancelled(self.task_id)

    @property
    def objects(self) -> ObjectStore:
        """The worker's object store, for kinds that work on the store as a whole (the
        backup); a kind reading one artifact uses ``artifact_pieces``/``artifact_file``."""
        return self._object_store()

    def _object_store(self) -> ObjectStore:
        if self._objects is None:
            raise PermanentError(
                "this worker has no object store configured (AGENTIC_OBJECT_STORE_URL)",
                reason="NO_OBJECT_STORE",
            )
        return self._objects

    @contextlib.contextmanager
    def _reading(self, ref: artifacts_pb2.ArtifactRef) -> Iterator[ObjectStore]:
        """The store, with its failures while reading ``ref`` as the task's errors: a
        missing object fails the task (PermanentError ``ARTIFACT_MISSING``), a store outage
        is retried (TransientError)."""
        try:
            yield self._object_store()
        except ObjectMissingError:
            raise PermanentError(
                f"artifact {ref.artifact_id} has no bytes in the object store (deleted?)",
                reason="ARTIFACT_MISSING",
            ) from None
        except ObjectStoreError as exc:
            raise TransientError(f"reading artifact {ref.artifact_id}: {exc}") from exc

    @contextlib.contextmanager
    def artifact_file(
        self,
        ref: artifacts_pb2.ArtifactRef,
        directory: Path | None = None,
        *,
        progress: Callable[[int], None] | None = None,
        check_ahead: bool = False,
    ) -> Iterator[Path]:
        """A verified local file of the referenced artifact, removed after the block.

        On the file store it is a hard link of the object (no copy; ``core.objects.fetch``),
        elsewhere the bytes stream into a temporary file (in ``directory``, default the
        system's); either way their size and sha256 are checked against ``ref`` before
        the block runs: a damaged or missing object fails the task (PermanentError
        ``ARTIFACT_DAMAGED`` or ``ARTIFACT_MISSING``), a store outage is retried
        (TransientError). ``progress`` gets the bytes checked so far after every piece
        (report or check for a cancel there: a 5 GiB artifact takes a while). Only read
        the file: it may be the stored object itself.

        ``check_ahead``: on the file store the link is handed out at once and checked in a
        thread beside the block (``core.objects.CheckAhead``), which saves the extra read
        before the work. ``store_output`` and the block's end wait for that check, so
        nothing computed from damaged bytes is ever published; a damaged object still
        fails the task ``ARTIFACT_DAMAGED``, even when the block failed on its bytes first.
        Elsewhere (S3) it changes nothing: the download is checked as it streams.
        """
        with self._reading(ref) as store:
            pinned = store.pin(ref.object_key) if check_ahead else None
            if pinned is None:
                try:
                    path = fetch(
                        store,
                        ref.object_key,
                        size_bytes=ref.size_bytes,
                        sha256=ref.sha256,
                        directory=directory,
                        progress=progress,
                    )
                except IntegrityError as exc:
                    raise PermanentError(str(exc), reason="ARTIFACT_DAMAGED") from None
        if pinned is not None:
            with self._checked_ahead(ref, pinned):
                yield pinned
            return
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _checked_ahead(self, ref: artifacts_pb2.ArtifactRef, path: Path) -> Iterator[None]:
        """``path`` checked beside the block; settled before the block's end counts."""
        check = CheckAhead(ref.object_key, path, size_bytes=ref.size_bytes, sha256=ref.sha256)
        self._checks.append(check)
        try:
            try:
                yield
            except PermanentError:
                _settle(check)  # damaged bytes are the cause to report, if they are
                raise
            except BaseException:
                check.stop()  # cancelled, lost or retried: the check's answer is moot
                raise
            _settle(check)
        finally:
            self._checks.remove(check)
            path.unlink(missing_ok=True)

    def store_output(self, output: Output, path: Path) -> str:
        """Store the file at ``path`` as an artifact of the task's project; its id.

        The artifact is READY when this returns and not visible before (see
        ``workers._outputs``); its id depends only on the task and ``output.slot``, so a
        retried or redelivered attempt stores the same artifact again, never a second one.
        A store or database outage is retried (TransientError).
        """
        for check in self._checks:  # nothing built on unchecked bytes gets published
            _settle(check)
        record = self._record
        if record is None or not record.project_id:
            raise PermanentError(
                "a task that stores artifacts needs a project (submit it with project_id)",
                reason="NO_PROJECT",
            )
        if self._outputs is None:
            self._object_store()  # the NO_OBJECT_STORE failure when none is configured
            raise PermanentError("this worker cannot store artifacts", reason="NO_OBJECT_STORE")
        # On PostgreSQL this thread keeps a pooled connection for its attempt's writes, and
        # the watchdog keeps another: with the pool's 2 (AGENTIC_DB_POOL_SIZE) the output's
        # session would wait out the pool timeout. Hand ours back; the next write takes it.
        self._store.close()
        try:
            return self._outputs.store(
                task_id=self.task_id,
                project_id=record.project_id,
                owner_id=record.owner_id,
                output=output,
                path=path,
            )
        except ObjectStoreError as exc:
            raise TransientError(f"storing {output.name!r}: {exc}") from exc
        except DBAPIError as exc:
            raise TransientError(f"recording {output.name!r}: {exc}") from exc

    def artifact_pieces(self, ref: artifacts_pb2.ArtifactRef) -> Iterator[bytes]:
        """The referenced artifact's bytes as they stream from the store, UNVERIFIED: for
        work that consumes them in place and checks ``ref.sha256`` itself at the end."""
        with self._reading(ref) as store:
            yield from store.read(ref.object_key)


def _settle(check: CheckAhead) -> None:
    """Wait for ``check``; its failure as the task's error."""
    try:
        check.wait()
    except IntegrityError as exc:
        raise PermanentError(str(exc), reason="ARTIFACT_DAMAGED") from None
    except OSError as exc:
        raise TransientError(f"checking an input artifact: {exc}") from exc
