"""DuckDB for the dataset kinds: one bounded, interruptible connection per attempt.

DuckDB scans CSV, Parquet and JSON lines where they lie, in one pass, within a
``memory_limit``, spilling to a ``temp_directory`` instead of failing (see the README's
dependency table). ``Engine`` wraps one in-memory connection for one attempt:

- its memory limit, threads and spill directory come from the worker's configuration
  (``context.work``);
- a statement runs in a helper thread while the task's own thread watches it: it
  interrupts the statement within ``POLL_SECONDS`` of a CancelTask
  (``context.cancelled()``) and reports the statement's own progress (DuckDB's
  ``query_progress``: the share of the input scanned, or "working" while it cannot tell)
  every ``REPORT_SECONDS``. Every
  read and write of the task database stays on the task's thread: on PostgreSQL each
  thread keeps a connection of the worker's pool (``AGENTIC_DB_POOL_SIZE``, 2: the task
  and the watchdog), and a third thread talking to the database would starve the task's
  own writes (its output artifact's row) until the pool's 30 s timeout;
- DuckDB's errors become the task's errors: unreadable data and memory exhaustion fail
  the task at once (PermanentError with a reason a user can act on), a full spill disk
  is retried (TransientError).

Identifiers that reach SQL are quoted with ``quote``; values travel as bound parameters,
and the file's path too (``source``), never spliced into the text.
"""

from __future__ import annotations

import concurrent.futures
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
from agentic.artifacts.v1 import artifacts_pb2
from agentic.tasks.v1 import datasets_pb2

from workers._context import (
    ClaimLost,
    PermanentError,
    TaskCancelled,
    TaskContext,
    TransientError,
    WorkSettings,
)

__all__ = ["Engine", "column_type", "dataset_format", "quote", "source"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
"""How often the watcher checks for cancellation (a cancel takes effect this late)."""
REPORT_SECONDS = 1.0
"""How often the watcher records the running statement's progress."""

_DATASET_FORMATS = {
    artifacts_pb2.DATASET_FORMAT_CSV: "csv",
    artifacts_pb2.DATASET_FORMAT_PARQUET: "parquet",
    artifacts_pb2.DATASET_FORMAT_JSONL: "jsonl",
}
# Table functions per artifact format; the path is the statement's first parameter.
_SOURCES = {
    "csv": "read_csv(?, header = true)",
    "parquet": "read_parquet(?)",
    "jsonl": "read_json(?, format = 'newline_delimited')",
}


_INTEGERS = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "UHUGEINT",
    }
)
_FLOATS = frozenset({"FLOAT", "DOUBLE", "REAL"})
_TIMESTAMPS = frozenset(
    {"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMP WITH TIME ZONE"}
)


def column_type(engine_type: str) -> datasets_pb2.ColumnType.ValueType:
    """The logical ColumnType of a DuckDB type name (as DESCRIBE spells it)."""
    name = engine_type.upper()
    if name in _INTEGERS:
        return datasets_pb2.COLUMN_TYPE_INTEGER
    if name in _FLOATS or name.startswith("DECIMAL"):
        return datasets_pb2.COLUMN_TYPE_FLOAT
    if name == "BOOLEAN":
        return datasets_pb2.COLUMN_TYPE_BOOLEAN
    if name == "VARCHAR":
        return datasets_pb2.COLUMN_TYPE_STRING
    if name == "DATE":
        return datasets_pb2.COLUMN_TYPE_DATE
    if name in _TIMESTAMPS:
        return datasets_pb2.COLUMN_TYPE_TIMESTAMP
    return datasets_pb2.COLUMN_TYPE_OTHER


def quote(identifier: str) -> str:
    """``identifier`` as a quoted SQL identifier (any text, quotes doubled)."""
    return '"' + identifier.replace('"', '""') + '"'


def source(fmt: str) -> str:
    """The table function that reads a dataset of format ``fmt`` (its path bound as ``?``)."""
    try:
        return _SOURCES[fmt]
    except KeyError:
        raise PermanentError(
            f"datasets of format {fmt!r} cannot be read (csv, parquet or jsonl)",
            reason="UNSUPPORTED_FORMAT",
        ) from None


def dataset_format(ref: artifacts_pb2.ArtifactRef) -> str | None:
    """The format (``csv``, ``parquet``, ``jsonl``) of a dataset reference, as its upload
    declared it (the server copies it into the reference at submit; never guessed from
    the bytes); None for a document or a format this worker does not read."""
    return _DATASET_FORMATS.get(ref.format)


class Engine:
    """One DuckDB connection for one attempt, cancellable and reporting progress."""

    def __init__(self, context: TaskContext) -> None:
        self._context = context
        self._settings: WorkSettings = context.work
        self._spill: tempfile.TemporaryDirectory[str] | None = None
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._statements = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="duckdb-statement"
        )
        self._statement: concurrent.futures.Future[list[tuple[Any, ...]]] | None = None
        self._cancelled = False
        self._lost = False
        # When this engine last reported progress: kept across statements, so a run of
        # short statements (each under REPORT_SECONDS) still reports every second.
        self._reported_at = time.monotonic()

    def __enter__(self) -> Engine:
        self._spill = tempfile.TemporaryDirectory(
            prefix="agentic-duckdb-", dir=self._settings.directory or None
        )
        connection = duckdb.connect(
            ":memory:",
            config={
                "memory_limit": f"{self._settings.duckdb_memory_limit_mib}MB",
                "threads": self._settings.duckdb_threads,
                "temp_directory": str(Path(self._spill.name)),
            },
        )
        for statement in (
            "SET enable_progress_bar = true",
            "SET enable_progress_bar_print = false",
            "SET progress_bar_time = 0",
        ):
            connection.execute(statement)
        self._connection = connection
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        running = self._statement is not None and not self._statement.done()
        if self._connection is not None and running:
            # The task's thread left while a statement runs (a soft time limit, say):
            # stop it, so the helper thread ends before the connection closes.
            self._connection.interrupt()
        self._statements.shutdown(wait=True)
        if self._connection is not None:
            self._connection.close()
        if self._spill is not None:
            self._spill.cleanup()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The raw connection (for statements that need no watching)."""
        assert self._connection is not None, "use Engine as a context manager"
        return self._connection

    def run(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        stage: str,
        span: tuple[float, float] = (0.0, 1.0),
    ) -> list[tuple[Any, ...]]:
        """Run ``sql`` with ``params`` and fetch every row.

        While it runs, its progress is reported as ``stage``, mapped into the task's
        fraction ``span``; a CancelTask interrupts it (TaskCancelled). DuckDB's errors
        become PermanentError or TransientError (see the module's docstring).
        """
        connection = self.connection
        self._cancelled = self._lost = False
        statement = self._statement = self._statements.submit(
            lambda: connection.execute(sql, list(params)).fetchall()
        )
        try:
            return self._watch(statement, stage, span)
        except duckdb.InterruptException:
            if self._lost:
                raise ClaimLost(self._context.task_id) from None
            if self._cancelled:
                raise TaskCancelled(self._context.task_id) from None
            raise TransientError("the DuckDB statement was interrupted") from None
        except duckdb.OutOfMemoryException as exc:
            raise PermanentError(
                f"{stage}: the query needs more memory than the worker's DuckDB memory limit "
                f"({self._settings.duckdb_memory_limit_mib} MiB) even with spilling: raise "
                f"AGENTIC_DUCKDB_MEMORY_LIMIT_MIB or query fewer groups ({_first_line(exc)})",
                reason="MEMORY_LIMIT_EXCEEDED",
            ) from None
        except duckdb.IOException as exc:
            if "No space left" in str(exc):
                raise TransientError(f"{stage}: spill disk full: {_first_line(exc)}") from exc
            raise PermanentError(
                f"{stage}: the dataset cannot be read: {_first_line(exc)}",
                reason="DATASET_UNREADABLE",
            ) from None
        except (
            duckdb.InvalidInputException,
            duckdb.ConversionException,
            duckdb.ParserException,
        ) as exc:
            raise PermanentError(
                f"{stage}: the dataset does not parse as its format: {_first_line(exc)}",
                reason="DATASET_UNREADABLE",
            ) from None

    def _watch(
        self,
        statement: concurrent.futures.Future[list[tuple[Any, ...]]],
        stage: str,
        span: tuple[float, float],
    ) -> list[tuple[Any, ...]]:
        """The statement's rows (or its exception), watched from the task's own thread."""
        fraction = span[0]
        while True:
            try:
                return statement.result(timeout=POLL_SECONDS)
            except concurrent.futures.TimeoutError:
                pass
            if self._cancelled or self._lost:
                continue  # interrupted: the statement ends with InterruptException
            try:
                if self._context.cancelled():
                    self._cancelled = True
                    self.connection.interrupt()
                    continue
                now = time.monotonic()
                if now - self._reported_at < REPORT_SECONDS:
                    continue
                self._reported_at = now
                percent = self.connection.query_progress()
                if percent >= 0:
                    fraction = span[0] + (span[1] - span[0]) * min(percent, 100.0) / 100.0
                    self._context.report_progress(fraction, f"{stage}: {percent:.0f}%")
                else:
                    # DuckDB cannot tell yet (some operators, such as quantile_disc's
                    # sort, report nothing for a while): a report all the same, at the
                    # fraction reached, so watchers see the task alive every second.
                    self._context.report_progress(fraction, f"{stage}: working")
            except ClaimLost:
                self._lost = True
                self.connection.interrupt()
            except Exception:
                # A progress write that failed (the database blinked) costs a report, not
                # the task: the attempt's own writes decide its fate.
                log.warning(
                    "progress of task %s not recorded", self._context.task_id, exc_info=True
                )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
