"""The profile_dataset kind: statistics of a dataset artifact, and an HTML report of them.

The worker fetches the artifact from the object store (``TaskContext.artifact_file``: a
hard link on the file store, checked beside the load; a copy from S3, verified as it
streams, with progress and a cancel check on the way), reads it once into DuckDB and
computes every statistic from the loaded table (``workers._profile_sql``).
The HTML report (``workers._profile_html``) is stored last, as the task's output artifact
``report-html``: a task that fails stores nothing, and a retried or redelivered attempt
stores the same artifact id again (``workers._outputs``), never a second report.

Bad data fails the task at once with a reason a user can act on: ``NOT_A_DATASET`` (a
document), ``DATASET_EMPTY`` (no bytes), ``DATASET_UNREADABLE`` (does not parse as its
format: ragged rows, invalid UTF-8, binary), ``TOO_MANY_COLUMNS``, ``PROFILE_TOO_LARGE``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from agentic.artifacts.v1 import artifacts_pb2
from agentic.tasks.v1 import datasets_pb2, profile_dataset_pb2
from google.protobuf import timestamp_pb2

from workers import _profile_sql as sql
from workers._context import PermanentError, TaskContext
from workers._duckdb import Engine, dataset_format
from workers._outputs import Output
from workers._profile_html import render

__all__ = ["MAX_COLUMNS", "MAX_TEXT_CHARS", "profile_statistics", "run_profile_dataset"]

DEFAULT_TOP_K = 10
DEFAULT_BINS = 20
MAX_COLUMNS = 1000
"""Widest dataset profiled: beyond, the result (kept in the task record and returned by
GetTask, whose messages are at most 4 MiB) would not fit."""
MAX_TEXT_CHARS = 256
"""Text values in the profile (min, max, top values) are cut to this many characters."""
MAX_RESULT_BYTES = 2 * 1024 * 1024
"""Largest serialized result (half of GetTask's 4 MiB message limit)."""
REPORT_SLOT = "report-html"

_REPORT_SECONDS = 1.0
_COPY_REPORT_BYTES = 32 * 1024 * 1024
_EPOCH = date(1970, 1, 1)
_INT64 = 2**63


class _Progress:
    """Progress between statements, at most once per _REPORT_SECONDS (the Engine reports
    inside long statements itself); every call also checks for a cancel."""

    def __init__(self, context: TaskContext) -> None:
        self._context = context
        self._at = float("-inf")

    def __call__(self, fraction: float, message: str) -> None:
        self._context.raise_if_cancelled()
        now = time.monotonic()
        if now - self._at >= _REPORT_SECONDS:
            self._context.report_progress(fraction, message)
            self._at = now


def _fetch_progress(ref: artifacts_pb2.ArtifactRef, progress: _Progress) -> Callable[[int], None]:
    """Progress (and cancel checks) while the dataset is fetched and verified: the first
    15% of the task."""
    reported = 0

    def checked(done: int) -> None:
        nonlocal reported
        if done - reported >= _COPY_REPORT_BYTES:
            progress(0.15 * done / ref.size_bytes, f"checked {done} of {ref.size_bytes} bytes")
            reported = done

    return checked


def _value(column: sql.Column, scalar: Any) -> datasets_pb2.Value | None:
    """A scalar from SQL (``Column.scalar``) as a Value of the column's type; None for NULL."""
    if scalar is None:
        return None
    kind = column.type
    if kind == datasets_pb2.COLUMN_TYPE_INTEGER:
        number = int(scalar)
        if -_INT64 <= number < _INT64:
            return datasets_pb2.Value(int_value=number)
        return datasets_pb2.Value(double_value=float(number))
    if kind == datasets_pb2.COLUMN_TYPE_FLOAT:
        return datasets_pb2.Value(double_value=float(scalar))
    if kind == datasets_pb2.COLUMN_TYPE_BOOLEAN:
        return datasets_pb2.Value(bool_value=bool(scalar))
    if kind == datasets_pb2.COLUMN_TYPE_STRING:
        return datasets_pb2.Value(string_value=str(scalar)[:MAX_TEXT_CHARS])
    if kind == datasets_pb2.COLUMN_TYPE_DATE:
        try:
            day = _EPOCH + timedelta(days=int(scalar))
        except OverflowError:  # beyond year 9999: DuckDB has them, google.type.Date not
            return None
        value = datasets_pb2.Value()
        value.date_value.year, value.date_value.month = day.year, day.month
        value.date_value.day = day.day
        return value
    if kind == datasets_pb2.COLUMN_TYPE_TIMESTAMP:
        return datasets_pb2.Value(timestamp_value=_timestamp(int(scalar)))
    return None


def _timestamp(micros: int) -> timestamp_pb2.Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=rest * 1000)


def _edge(column: sql.Column, x: float) -> datasets_pb2.Value:
    """A histogram bound: a number, or for dates and timestamps the point in time (a date
    column's bounds fall between midnights, so they are timestamps too)."""
    if column.type == datasets_pb2.COLUMN_TYPE_DATE:
        return datasets_pb2.Value(timestamp_value=_timestamp(round(x * 86_400_000_000)))
    if column.type == datasets_pb2.COLUMN_TYPE_TIMESTAMP:
        return datasets_pb2.Value(timestamp_value=_timestamp(round(x)))
    return datasets_pb2.Value(double_value=x)


def _histogram(
    column: sql.Column, low: float, high: float, counts: list[int]
) -> list[profile_dataset_pb2.HistogramBin]:
    bins = len(counts)
    edges = [low + (high - low) * index / bins for index in range(bins)] + [high]
    return [
        profile_dataset_pb2.HistogramBin(
            lower=_edge(column, edges[index]), upper=_edge(column, edges[index + 1]), count=count
        )
        for index, count in enumerate(counts)
    ]


def profile_statistics(
    engine: Engine,
    columns: list[sql.Column],
    top_k: int,
    bins: int,
    progress: Callable[[float, str], None],
) -> tuple[int, list[profile_dataset_pb2.ColumnProfile]]:
    """The row count and every column's profile, from the table ``sql.load`` loaded."""
    rows, summaries = sql.summary(engine, columns, (0.6, 0.65))
    progress(0.65, "averaging")
    moments = sql.moments(engine, columns, (0.65, 0.7))
    grouped: dict[str, sql.Groups] = {}
    ordered = [(c, s) for c, s in zip(columns, summaries, strict=True) if c.ordered]
    for index, (c, s) in enumerate(ordered):
        if s.non_null:
            span = sql.share((0.7, 0.85), index, len(ordered))
            progress(span[0], f"top values of {c.name!r}")
            grouped[c.name] = sql.groups(engine, c, s.non_null, top_k, span, quantiles=c.ranged)
    progress(0.85, "quantiles")
    ranged = [
        (c, s.non_null)
        for c, s in zip(columns, summaries, strict=True)
        if c.ranged and s.non_null > 0 and grouped[c.name].quantiles is None
    ]
    quantiles = sql.quantiles(engine, ranged, engine_budget_bytes(engine), (0.85, 0.9))
    quantiles |= {n: g.quantiles for n, g in grouped.items() if g.quantiles is not None}
    progress(0.9, "histograms")
    spans: list[tuple[sql.Column, float, float]] = []
    single: dict[str, int] = {}
    for c, s in zip(columns, summaries, strict=True):
        if not c.ranged or not sql.finite(s.min, s.max):
            continue  # no values, or NaN / infinity among them: no equal-width bins
        if s.min == s.max:
            single[c.name] = s.non_null
        else:
            spans.append((c, float(s.min), float(s.max)))
    counts = sql.histograms(engine, spans, bins, (0.9, 0.97))
    out: list[profile_dataset_pb2.ColumnProfile] = []
    for c, s in zip(columns, summaries, strict=True):
        profile = profile_dataset_pb2.ColumnProfile(
            column=datasets_pb2.Column(name=c.name, type=c.type, engine_type=c.engine_type),
            null_count=rows - s.non_null,
            approx_distinct=s.approx_distinct,
        )
        for field, scalar in (("min", s.min), ("max", s.max)):
            value = _value(c, scalar)
            if value is not None:
                getattr(profile, field).CopyFrom(value)
        m = moments.get(c.name)
        if m is not None and m.mean is not None:
            profile.mean = m.mean
        if m is not None and m.stddev is not None and c.numeric:
            profile.stddev = m.stddev
        for field, scalar in zip(("p25", "p50", "p75"), quantiles.get(c.name, []), strict=False):
            value = _value(c, scalar)
            if value is not None:
                getattr(profile, field).CopyFrom(value)
        groups = grouped.get(c.name)
        if groups is not None:
            profile.approx_distinct = groups.distinct
            for scalar, count in groups.top:
                value = _value(c, scalar)
                if value is not None:
                    profile.top_values.add(value=value, count=count)
        if c.name in counts:
            _, low, high = next(item for item in spans if item[0].name == c.name)
            profile.histogram.extend(_histogram(c, low, high, counts[c.name]))
        elif c.name in single:
            edge = _edge(c, float(s.min))
            profile.histogram.add(lower=edge, upper=edge, count=single[c.name])
        out.append(profile)
    return rows, out


def engine_budget_bytes(engine: Engine) -> int:
    """What exact quantiles may hold in memory: a quarter of the engine's memory limit."""
    limit = engine.connection.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    return _parse_size(str(limit)) // 4


def _parse_size(text: str) -> int:
    number, unit = text.split()
    scale = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "KB": 10**3, "MB": 10**6}
    scale |= {"GB": 10**9, "TB": 10**12, "bytes": 1}
    return int(float(number) * scale.get(unit, 1))


def run_profile_dataset(
    spec: profile_dataset_pb2.ProfileDatasetSpec, context: TaskContext
) -> profile_dataset_pb2.ProfileDatasetResult:
    """Profile the referenced dataset; the profile and its stored HTML report's id."""
    ref = spec.dataset
    fmt = dataset_format(ref)
    if fmt is None:
        raise PermanentError(
            f"artifact {ref.artifact_id} is not a dataset (it has no dataset format): "
            "profile a DATASET artifact (CSV, Parquet or JSON lines)",
            reason="NOT_A_DATASET",
        )
    if ref.size_bytes == 0:
        raise PermanentError(
            f"dataset {ref.artifact_id} is empty (0 bytes): there is nothing to profile",
            reason="DATASET_EMPTY",
        )
    top_k = spec.top_k or DEFAULT_TOP_K
    bins = spec.histogram_bins or DEFAULT_BINS
    progress = _Progress(context)
    directory = Path(context.work.directory) if context.work.directory else None
    context.report_progress(0.0, f"fetching {ref.size_bytes} bytes")
    with Engine(context) as engine:
        with context.artifact_file(
            ref, directory, progress=_fetch_progress(ref, progress), check_ahead=True
        ) as path:
            progress(0.15, "reading the dataset")
            columns = sql.load(engine, str(path), fmt)  # the check ahead settles after it
        # The loaded table is all that is needed from here: the copy is gone already.
        if len(columns) > MAX_COLUMNS:
            raise PermanentError(
                f"dataset {ref.artifact_id} has {len(columns)} columns; a profile covers at "
                f"most {MAX_COLUMNS}: split the dataset or drop columns",
                reason="TOO_MANY_COLUMNS",
            )
        progress(0.6, "counting")
        rows, profiles = profile_statistics(engine, columns, top_k, bins, progress)
    profile = profile_dataset_pb2.DatasetProfile(
        row_count=rows, size_bytes=ref.size_bytes, format=fmt.upper(), columns=profiles
    )
    if profile.ByteSize() > MAX_RESULT_BYTES:
        raise PermanentError(
            f"the profile of dataset {ref.artifact_id} would take {profile.ByteSize()} bytes, "
            f"more than the {MAX_RESULT_BYTES} a task result may: ask for a smaller top_k",
            reason="PROFILE_TOO_LARGE",
        )
    progress(0.97, "writing the report")
    with tempfile.TemporaryDirectory(prefix="profile-report-", dir=directory) as scratch:
        page = Path(scratch) / "report.html"
        page.write_text(render(profile, f"dataset {ref.artifact_id}"), encoding="utf-8")
        context.raise_if_cancelled()
        report_id = context.store_output(
            Output(
                slot=REPORT_SLOT,
                name=f"profile-{ref.artifact_id}.html",
                kind="document",
                content_type="text/html",
            ),
            page,
        )
    return profile_dataset_pb2.ProfileDatasetResult(profile=profile, report_artifact_id=report_id)
