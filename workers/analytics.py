"""RunAnalytics (``TASK_KIND_ANALYTICS``): a typed group-by query over a dataset artifact.

One attempt, on one bounded DuckDB connection (``workers._duckdb.Engine``):

1. a local copy of the dataset (``context.artifact_file``; on the file store its sha256
   is checked beside the query, and the result artifacts wait for that check);
2. ``DESCRIBE`` of the source: the real column names and types the query is checked
   against (``workers._query.build_query``: unknown columns, measures and filter values
   that do not fit a column's type fail the task at once, before any scan);
3. the query, materialised once into a temporary table of the connection (DuckDB keeps it
   within its memory limit and spills the rest to the work directory): the one full scan;
4. the whole table written by DuckDB itself (``COPY ... TO``) as Parquet and as CSV into
   the attempt's temporary directory, then stored as the task's two result artifacts
   (slots ``result-parquet`` and ``result-csv``, ids derived from the task, so a retried
   attempt stores the same two and never a second pair);
5. the first ``PREVIEW_ROWS`` rows read into the result as typed cells.

Python never holds more of the result than the preview. Progress comes from DuckDB's own
progress of each statement (``Engine.run``'s spans); a CancelTask interrupts the running
statement within 0.1 s.
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentic.artifacts.v1 import artifacts_pb2
from agentic.tasks.v1 import analytics_pb2, datasets_pb2
from google.protobuf import struct_pb2

from workers._context import PermanentError, TaskContext
from workers._duckdb import Engine, dataset_format, quote, source
from workers._outputs import Output
from workers._query import SourceColumn, build_query

__all__ = ["PREVIEW_ROWS", "run_analytics"]

PREVIEW_ROWS = 100
"""Rows of the result carried inline (``AnalyticsResult.rows``)."""

_TABLE = "analytics_result"
# The result artifacts: format (and slot "result-<format>"), COPY options, content type.
_RESULT_FILES = (
    ("parquet", "FORMAT parquet, COMPRESSION zstd", "application/vnd.apache.parquet"),
    ("csv", "FORMAT csv, HEADER true", "text/csv"),
)
_INT64 = (-(2**63), 2**63 - 1)


def run_analytics(
    spec: analytics_pb2.AnalyticsSpec, context: TaskContext
) -> analytics_pb2.AnalyticsResult:
    """Answer ``spec`` over its dataset; the typed preview and the two result artifacts."""
    reader = source(_format(spec.dataset))  # before any byte is fetched
    directory = Path(context.work.directory) if context.work.directory else None
    context.report_progress(0.0, "fetching the dataset")
    with (
        context.artifact_file(spec.dataset, directory, check_ahead=True) as path,
        tempfile.TemporaryDirectory(prefix="agentic-analytics-", dir=directory) as scratch,
        Engine(context) as engine,
    ):
        context.report_progress(0.02, "reading the columns")
        # Time buckets and zoned timestamps in UTC, whatever the worker host's zone.
        engine.connection.execute("SET TimeZone = 'UTC'")
        described = engine.run(
            f"DESCRIBE SELECT * FROM {reader}",
            [str(path)],
            stage="reading the columns",
            span=(0.02, 0.05),
        )
        columns = [SourceColumn(str(row[0]), str(row[1])) for row in described]
        query = build_query(spec, columns, reader, [str(path)])
        engine.run(
            f"CREATE TEMP TABLE {_TABLE} AS {query.sql}",
            query.params,
            stage="running the query",
            span=(0.05, 0.85),
        )
        context.report_progress(0.85, "writing the result files")
        outputs = [
            SourceColumn(str(row[0]), str(row[1]))
            for row in engine.run(f"DESCRIBE {_TABLE}", stage="describing the result")
        ]
        row_count = int(engine.run(f"SELECT count(*) FROM {_TABLE}", stage="counting")[0][0])
        files = {}
        for number, (fmt, options, _) in enumerate(_RESULT_FILES):
            files[fmt] = Path(scratch) / f"result.{fmt}"
            engine.run(
                f"COPY {_TABLE} TO ? ({options})",
                [str(files[fmt])],
                stage=f"writing {fmt}",
                span=(0.85 + 0.05 * number, 0.9 + 0.05 * number),
            )
        preview = engine.run(
            f"SELECT {', '.join(_cell(c) for c in outputs)} FROM {_TABLE} LIMIT {PREVIEW_ROWS}",
            stage="reading the first rows",
        )
        context.raise_if_cancelled()
        context.report_progress(0.95, "storing the result")
        stored = {
            fmt: context.store_output(
                Output(
                    slot=f"result-{fmt}",
                    name=f"analytics-{context.task_id}.{fmt}",
                    kind="dataset",
                    content_type=content_type,
                    fmt=fmt,
                ),
                files[fmt],
            )
            for fmt, _, content_type in _RESULT_FILES
        }
    return analytics_pb2.AnalyticsResult(
        columns=[
            datasets_pb2.Column(name=c.name, type=c.type, engine_type=c.engine_type)
            for c in outputs
        ],
        rows=[_row(outputs, row) for row in preview],
        row_count=row_count,
        parquet_artifact_id=stored["parquet"],
        csv_artifact_id=stored["csv"],
    )


def _format(ref: artifacts_pb2.ArtifactRef) -> str:
    """The dataset's format as its upload declared it (the server copies it into the
    reference at submit): never guessed from the bytes."""
    fmt = dataset_format(ref)
    if fmt is None:
        raise PermanentError(
            f"artifact {ref.artifact_id} is not a dataset of a format this worker reads "
            "(csv, parquet or jsonl)",
            reason="UNSUPPORTED_FORMAT",
            metadata={"artifact_id": ref.artifact_id},
        )
    return fmt


def _cell(column: SourceColumn) -> str:
    """The expression that reads ``column`` of the result for its typed cells: timestamps
    as microseconds since the epoch (exact, and zone-free), decimals as doubles, anything
    without a Value field of its own as text."""
    name = quote(column.name)
    kind = column.type
    if kind == datasets_pb2.COLUMN_TYPE_TIMESTAMP:
        if column.engine_type.upper() == "TIMESTAMP_NS":
            return f"epoch_ns({name})"
        return f"epoch_us({name})"
    if kind == datasets_pb2.COLUMN_TYPE_FLOAT:
        return f"CAST({name} AS DOUBLE)"
    if kind == datasets_pb2.COLUMN_TYPE_OTHER:
        return f"CAST({name} AS VARCHAR)"
    return name


def _row(columns: Sequence[SourceColumn], row: Sequence[Any]) -> datasets_pb2.Row:
    return datasets_pb2.Row(cells=[_value(c, v) for c, v in zip(columns, row, strict=True)])


def _value(column: SourceColumn, value: Any) -> datasets_pb2.Value:
    """One cell as a typed Value (see ``_cell`` for how each type arrives)."""
    if value is None:
        return datasets_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    kind = column.type
    if kind == datasets_pb2.COLUMN_TYPE_INTEGER:
        number = int(value)
        if _INT64[0] <= number <= _INT64[1]:
            return datasets_pb2.Value(int_value=number)
        return datasets_pb2.Value(double_value=float(number))  # beyond int64 (UBIGINT)
    if kind == datasets_pb2.COLUMN_TYPE_FLOAT:
        return datasets_pb2.Value(double_value=float(value))
    if kind == datasets_pb2.COLUMN_TYPE_BOOLEAN:
        return datasets_pb2.Value(bool_value=bool(value))
    if kind == datasets_pb2.COLUMN_TYPE_DATE:
        assert isinstance(value, datetime.date)
        cell = datasets_pb2.Value()
        cell.date_value.year, cell.date_value.month, cell.date_value.day = (
            value.year,
            value.month,
            value.day,
        )
        return cell
    if kind == datasets_pb2.COLUMN_TYPE_TIMESTAMP:
        per_second = 10**9 if column.engine_type.upper() == "TIMESTAMP_NS" else 10**6
        seconds, fraction = divmod(int(value), per_second)
        cell = datasets_pb2.Value()
        cell.timestamp_value.seconds = seconds
        cell.timestamp_value.nanos = fraction * (10**9 // per_second)
        return cell
    return datasets_pb2.Value(string_value=str(value))
