"""The statistics of a dataset profile, as DuckDB statements over one loaded table.

The dataset is read once (``load``: the only pass over the file, into a temporary table in
DuckDB's columnar format, spilled to the engine's temp directory beyond its memory limit);
every statistic is then a scan of the table's columns:

1. ``summary``: per column the non-NULL count, min and max (one statement per batch of
   columns); for columns without an order (lists, structs) a HyperLogLog distinct estimate;
2. ``moments``: mean and sample standard deviation. Of integer and boolean columns from
   exact sums (HUGEINT: the same whatever order the threads add in), on all threads; of
   float columns on ONE thread: a float sum depends on the order its parts are added in,
   and with several threads that order varies from run to run; one thread scans the table
   in file order, so the same file gives the same bits (an integer sum that overflows
   HUGEINT takes that path too);
3. ``groups``: one GROUP BY per ordered column into a temporary table: its most frequent
   values (ties by value), its number of groups (the column's exact distinct count:
   HyperLogLog, DuckDB's ``approx_count_distinct``, is off by 10% on 20 values and by 3%
   on 7 million), and, for a ranged column with at most a quarter as many groups as
   values, its exact quantiles from the groups' running counts (sorting the groups costs
   far less than selecting among all the values);
4. ``quantiles``: exact nearest-rank quantiles of the other ranged columns
   (``quantile_disc``, which keeps the values of the statement's columns in memory) while
   a column's values fit a quarter of the memory limit, else t-digest estimates
   (``approx_quantile``) on one thread, for the same reason as 2;
5. ``histograms``: equal-width bins between min and max, all columns in one statement.

Integer counts are the same whatever the threads do, so 1, 3, 4 (exact) and 5 use them all.
Quantiles by either route are the nearest-rank value: the smallest value with at least
``ceil(q * n)`` values at or below it.
Values leave SQL as plain numbers, text or booleans (``Kind.scalar``): dates as days since
1970-01-01, timestamps as microseconds since the epoch (UTC), so nothing depends on the
driver's date and time zone conversions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import duckdb
from agentic.tasks.v1 import datasets_pb2

from workers._context import PermanentError
from workers._duckdb import Engine, column_type, quote

__all__ = [
    "TABLE",
    "Column",
    "Groups",
    "Moments",
    "Summary",
    "groups",
    "histograms",
    "load",
    "moments",
    "quantiles",
    "share",
    "summary",
    "table_columns",
]

TABLE = "profiled"
"""The temporary table the dataset is loaded into."""
_GROUPS = "profiled_groups"
"""The temporary table of one column's groups (``groups``)."""
GROUPED_QUANTILES_MAX_SHARE = 4
"""A ranged column gets its quantiles from its groups when it has at most 1/4 as many
groups as non-NULL values."""
BATCH_COLUMNS = 100
"""Columns per statistics statement: keeps a wide dataset's statements a sane size."""
QUANTILES = (0.25, 0.5, 0.75)

# The dialect of a dataset of format CSV: comma-separated with a header row (the proto's
# word for it). Fixing it keeps the sniffer from "finding" another delimiter or a header
# further down when rows are ragged: a ragged row then fails the read, as it should.
_CSV = "read_csv(?, header = true, skip = 0, delim = ',', quote = '\"', escape = '\"'{})"
_SOURCES = {
    "csv": _CSV,
    "parquet": "read_parquet(?{})",
    "jsonl": "read_json(?, format = 'newline_delimited'{})",
}

_NUMERIC = (datasets_pb2.COLUMN_TYPE_INTEGER, datasets_pb2.COLUMN_TYPE_FLOAT)
_RANGED = (*_NUMERIC, datasets_pb2.COLUMN_TYPE_DATE, datasets_pb2.COLUMN_TYPE_TIMESTAMP)


@dataclass(frozen=True, slots=True)
class Column:
    """A column of the loaded table."""

    name: str
    engine_type: str
    type: datasets_pb2.ColumnType.ValueType

    @property
    def ref(self) -> str:
        """The quoted identifier."""
        return quote(self.name)

    @property
    def scalar(self) -> str:
        """The column's values as plain SQL scalars, in the column's own order."""
        if self.type == datasets_pb2.COLUMN_TYPE_FLOAT:
            return f"{self.ref}::DOUBLE"
        if self.type == datasets_pb2.COLUMN_TYPE_DATE:
            return f"({self.ref} - DATE '1970-01-01')"
        if self.type == datasets_pb2.COLUMN_TYPE_TIMESTAMP:
            return f"epoch_us({self.ref})"
        return self.ref

    @property
    def ordered(self) -> bool:
        """Has min, max and top values."""
        return self.type != datasets_pb2.COLUMN_TYPE_OTHER

    @property
    def numeric(self) -> bool:
        """Has a mean and a standard deviation."""
        return self.type in _NUMERIC

    @property
    def ranged(self) -> bool:
        """Has quantiles and a histogram."""
        return self.type in _RANGED


@dataclass(frozen=True, slots=True)
class Summary:
    """The counts and the range of one column (scalars as ``Column.scalar`` gives them)."""

    non_null: int
    approx_distinct: int
    """The HyperLogLog estimate for unordered columns; 0 for ordered ones (see groups)."""
    min: Any
    max: Any


@dataclass(frozen=True, slots=True)
class Moments:
    """Mean and sample standard deviation of one column (None where undefined)."""

    mean: float | None
    stddev: float | None


Span = tuple[float, float]


def _batches(columns: Sequence[Any], span: Span) -> Iterator[tuple[Sequence[Any], Span]]:
    """``columns`` in batches of BATCH_COLUMNS, each with its share of ``span`` (progress
    only moves forward)."""
    count = max(1, -(-len(columns) // BATCH_COLUMNS))
    for number, start in enumerate(range(0, len(columns), BATCH_COLUMNS)):
        yield columns[start : start + BATCH_COLUMNS], share(span, number, count)


def share(span: Span, number: int, count: int) -> Span:
    """Part number of count equal parts of span."""
    width = (span[1] - span[0]) / count
    return span[0] + width * number, span[0] + width * (number + 1)


def load(engine: Engine, path: str, fmt: str) -> list[Column]:
    """Read the dataset at ``path`` into ``TABLE`` (one pass); its columns.

    Type detection samples the file; a CSV or JSON lines file whose later rows do not fit
    the sampled types is read once more with every row sampled before it is refused.
    """
    template = _SOURCES[fmt]
    attempts = [template.format("")]
    if fmt != "parquet":
        attempts.append(template.format(", sample_size = -1"))
    for number, source in enumerate(attempts):
        try:
            engine.run(
                f"CREATE OR REPLACE TEMP TABLE {TABLE} AS SELECT * FROM {source}",
                [path],
                stage="reading the dataset",
                span=(0.15, 0.6),
            )
            break
        except PermanentError as exc:
            if exc.reason != "DATASET_UNREADABLE" or number == len(attempts) - 1:
                raise
        except duckdb.Error as exc:  # what Engine leaves unmapped: binder, not implemented
            raise PermanentError(
                f"reading the dataset: it does not read as {fmt.upper()}: "
                f"{str(exc).strip().splitlines()[0]}",
                reason="DATASET_UNREADABLE",
            ) from None
    return table_columns(engine)


def table_columns(engine: Engine) -> list[Column]:
    """The columns of ``TABLE`` as DuckDB typed them, in table order."""
    described = engine.connection.execute(f"DESCRIBE {TABLE}").fetchall()
    return [Column(str(row[0]), str(row[1]), column_type(str(row[1]))) for row in described]


def summary(engine: Engine, columns: Sequence[Column], span: Span) -> tuple[int, list[Summary]]:
    """The row count and every column's Summary."""
    rows = int(engine.run(f"SELECT count(*) FROM {TABLE}", stage="counting")[0][0])
    out: list[Summary] = []
    for batch, part in _batches(columns, span):
        parts = ["count(*)"]
        for c in batch:
            parts.append(f"count({c.ref})")
            # Ordered columns get their exact distinct count from the top-values GROUP BY.
            parts += (
                ["NULL", f"min({c.scalar})", f"max({c.scalar})"]
                if c.ordered
                else [f"approx_count_distinct({c.ref}::VARCHAR)", "NULL", "NULL"]
            )
        (row,) = engine.run(f"SELECT {', '.join(parts)} FROM {TABLE}", stage="counting", span=part)
        for index in range(len(batch)):
            non_null, distinct, low, high = row[1 + 4 * index : 5 + 4 * index]
            out.append(Summary(int(non_null), int(distinct or 0), low, high))
    return rows, out


def _single_thread(engine: Engine, sql: str, stage: str, span: Span) -> Any:
    """``sql`` run on one thread (a table scan in file order), the engine's threads after."""
    connection = engine.connection
    threads = connection.execute("SELECT current_setting('threads')").fetchall()[0][0]
    connection.execute("SET threads = 1")
    try:
        return engine.run(sql, stage=stage, span=span)
    finally:
        connection.execute(f"SET threads = {int(threads)}")


def moments(engine: Engine, columns: Sequence[Column], span: Span) -> dict[str, Moments]:
    """Mean (numeric and boolean columns) and standard deviation (numeric), by name."""
    exact = [
        c
        for c in columns
        if c.type in (datasets_pb2.COLUMN_TYPE_INTEGER, datasets_pb2.COLUMN_TYPE_BOOLEAN)
    ]
    floats = [c for c in columns if c.type == datasets_pb2.COLUMN_TYPE_FLOAT]
    middle = (span[0] + span[1]) / 2
    out: dict[str, Moments] = {}
    for batch, part in _batches(exact, (span[0], middle)):
        try:
            out.update(_exact_moments(engine, batch, part))
        except duckdb.OutOfRangeException:
            floats.extend(batch)  # sums beyond HUGEINT: the one-thread float path
    for batch, part in _batches(floats, (middle, span[1])):
        parts = []
        for c in batch:
            if c.type == datasets_pb2.COLUMN_TYPE_BOOLEAN:
                parts += [f"avg({c.ref}::INTEGER)", "NULL"]
            else:
                parts += [f"avg({c.scalar})", f"stddev_samp({c.scalar})"]
        (row,) = _single_thread(
            engine, f"SELECT {', '.join(parts)} FROM {TABLE}", "averaging", part
        )
        for index, c in enumerate(batch):
            mean, stddev = row[2 * index], row[2 * index + 1]
            out[c.name] = Moments(
                None if mean is None else float(mean),
                None if stddev is None or not c.numeric else float(stddev),
            )
    return out


def _exact_moments(engine: Engine, batch: Sequence[Column], span: Span) -> dict[str, Moments]:
    """Moments of integer and boolean columns from exact HUGEINT sums (any thread order
    gives the same sums); OutOfRangeException when a sum overflows."""
    parts = []
    for c in batch:
        value = (
            f"{c.ref}::INTEGER::HUGEINT"
            if c.type == datasets_pb2.COLUMN_TYPE_BOOLEAN
            else f"{c.ref}::HUGEINT"
        )
        parts += [f"count({c.ref})", f"sum({value})", f"sum({value} * {value})"]
    (row,) = engine.run(f"SELECT {', '.join(parts)} FROM {TABLE}", stage="averaging", span=span)
    out: dict[str, Moments] = {}
    for index, c in enumerate(batch):
        n, total, squares = (int(v or 0) for v in row[3 * index : 3 * index + 3])
        mean = None if n == 0 else float(Fraction(total, n))
        stddev = None
        if n > 1 and c.numeric:
            # Sample variance (n * sum(x^2) - sum(x)^2) / (n (n - 1)), exact until the root.
            stddev = math.sqrt(Fraction(n * squares - total * total, n * (n - 1)))
        out[c.name] = Moments(mean, stddev)
    return out


def quantiles(
    engine: Engine, columns: Sequence[tuple[Column, int]], budget_bytes: int, span: Span
) -> dict[str, list[Any]]:
    """p25, p50, p75 of each (column, non-NULL count), by name (see the module docstring)."""
    wanted = ", ".join(str(q) for q in QUANTILES)
    # Plan the statements first: exact ones grouped while their values fit the budget,
    # a column too large for it alone in a t-digest statement.
    plan: list[tuple[bool, list[Column]]] = []
    used = budget_bytes + 1
    for column, non_null in columns:
        need = 16 * non_null  # a value and its share of the sort, per row
        if need > budget_bytes:
            plan.append((False, [column]))
            continue
        if used + need > budget_bytes or len(plan[-1][1]) >= BATCH_COLUMNS or not plan[-1][0]:
            plan.append((True, []))
            used = 0
        plan[-1][1].append(column)
        used += need
    out: dict[str, list[Any]] = {}
    for number, (exact, group) in enumerate(plan):
        part = share(span, number, len(plan))
        if exact:
            parts = [f"quantile_disc({c.scalar}, [{wanted}])" for c in group]
            (row,) = engine.run(
                f"SELECT {', '.join(parts)} FROM {TABLE}", stage="quantiles", span=part
            )
        else:
            (c,) = group
            sql = f"SELECT approx_quantile({c.scalar}, [{wanted}]) FROM {TABLE}"
            (row,) = _single_thread(engine, sql, "quantiles", part)
        out.update({c.name: list(v or []) for c, v in zip(group, row, strict=True)})
    return out


def histograms(
    engine: Engine, columns: Sequence[tuple[Column, float, float]], bins: int, span: Span
) -> dict[str, list[int]]:
    """Counts of ``bins`` equal-width bins between (low, high) per column, by name.

    A value x lands in bin ``floor((x - low) * bins / (high - low))``, the top value in the
    last bin. Columns need ``low < high``, both finite.
    """
    out: dict[str, list[int]] = {}
    for batch, part in _batches(columns, span):
        parts: list[str] = []
        params: list[Any] = []
        for column, low, high in batch:
            # least() skips NULLs (least(NULL, 11) is 11): the FILTER keeps them out.
            parts.append(
                f"histogram(least(floor(({column.scalar}::DOUBLE - ?) * ? / (? - ?)), ?)::BIGINT)"
                f" FILTER (WHERE {column.ref} IS NOT NULL)"
            )
            params += [low, float(bins), high, low, bins - 1]
        (row,) = engine.run(
            f"SELECT {', '.join(parts)} FROM {TABLE}",
            params,
            stage="histograms",
            span=part,
        )
        for (column, _, _), counts in zip(batch, row, strict=True):
            dense = [0] * bins
            for index, count in (counts or {}).items():
                dense[int(index)] += int(count)
            out[column.name] = dense
    return out


@dataclass(frozen=True, slots=True)
class Groups:
    """What one column's GROUP BY gives (scalars as ``Column.scalar`` gives them)."""

    top: list[tuple[Any, int]]
    """The most frequent non-NULL values with their counts, ties by value."""
    distinct: int
    """The exact number of distinct non-NULL values."""
    quantiles: list[Any] | None
    """QUANTILES from the groups' running counts; None when they were not computed here."""


def groups(
    engine: Engine, column: Column, non_null: int, k: int, span: Span, *, quantiles: bool
) -> Groups:
    """The top ``k`` values and the distinct count of ``column`` (``non_null`` values), and
    its QUANTILES when asked for and the groups are few enough (see the module doc)."""
    engine.run(
        f"CREATE OR REPLACE TEMP TABLE {_GROUPS} AS SELECT {column.scalar} AS v, "
        f"count(*) AS n FROM {TABLE} WHERE {column.ref} IS NOT NULL GROUP BY v",
        stage=f"top values of {column.name!r}",
        span=span,
    )
    try:
        rows = engine.run(
            f"SELECT v, n, (SELECT count(*) FROM {_GROUPS}) FROM {_GROUPS} "
            "ORDER BY n DESC, v ASC LIMIT ?",
            [k],
            stage=f"top values of {column.name!r}",
        )
        distinct = int(rows[0][2]) if rows else 0
        found = None
        if quantiles and 0 < distinct * GROUPED_QUANTILES_MAX_SHARE <= non_null:
            found = _grouped_quantiles(engine, column, non_null)
        return Groups([(v, int(n)) for v, n, _ in rows], distinct, found)
    finally:
        engine.connection.execute(f"DROP TABLE IF EXISTS {_GROUPS}")


def nearest_rank(q: float, n: int) -> int:
    """The 1-based rank of quantile ``q`` of ``n`` values (``quantile_disc``'s choice)."""
    return max(1, math.ceil(Fraction(q) * n))


def _grouped_quantiles(engine: Engine, column: Column, non_null: int) -> list[Any]:
    """QUANTILES of ``column`` from its groups: per quantile the smallest value whose
    running count reaches the quantile's rank."""
    ranks = [nearest_rank(q, non_null) for q in QUANTILES]
    picks = ", ".join("min(v) FILTER (WHERE below >= ?)" for _ in ranks)
    (row,) = engine.run(
        f"SELECT {picks} FROM (SELECT v, sum(n) OVER (ORDER BY v ROWS BETWEEN UNBOUNDED "
        f"PRECEDING AND CURRENT ROW) AS below FROM {_GROUPS})",
        ranks,
        stage=f"quantiles of {column.name!r}",
    )
    return list(row)


def finite(*values: Any) -> bool:
    """True when every value is a finite number."""
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)
