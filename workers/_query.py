"""RunAnalytics' query model: a typed ``AnalyticsSpec`` becomes one DuckDB statement.

No SQL text comes from a client. ``build_query`` turns the spec into ``(sql, params)``
against the dataset's real columns (``SourceColumn``, from a DESCRIBE of the source):

- every identifier the spec names is looked up, exactly, among those columns (or, for
  ``order_by``, among the output columns) and then quoted with ``quote``; a name that is
  not there fails the task with ``UNKNOWN_COLUMN``, whatever characters it holds, so a
  name shaped like an injection (``x"; DROP TABLE t; --``) is just an unknown column, or
  a column, quoted, when the dataset really has one of that name;
- every value (filter operands) is a bound parameter with an explicit cast to the
  column's type family, never spliced; a value of another type than the column's fails
  with ``TYPE_MISMATCH``, as does a measure the column's type does not support;
- the only text spliced in besides quoted identifiers comes from fixed tables keyed by
  enum values (function names, ``date_trunc`` parts, operators) and integers the spec
  typed as integers (the limit).

Failures are ``PermanentError``s with ``metadata`` naming the ``column`` and the spec
``field`` (``measures[2].column``), which become the task's ErrorInfo metadata.

The statement has the shape::

    SELECT * FROM (
        SELECT <group columns>, <time bucket>, <measures>
        FROM <source> WHERE <filters> GROUP BY 1, 2, ...
    ) ORDER BY <keys, then every output column> LIMIT <n>

The outer SELECT sorts on output names only, so a measure alias that equals an input
column's name never changes what a filter or an aggregate reads. The order is total
(every output column breaks ties, NULLs last), so the same spec on the same data gives
the same rows in the same order.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentic.tasks.v1 import analytics_pb2, datasets_pb2

from workers._context import PermanentError
from workers._duckdb import column_type, quote

__all__ = ["Query", "SourceColumn", "build_query"]

# Integers wider than Value's and Parquet's 64 bits.
_WIDE_INTEGERS = frozenset({"HUGEINT", "UHUGEINT", "UBIGINT"})
_FLOATS = frozenset({"FLOAT", "REAL", "DOUBLE"})


@dataclass(frozen=True, slots=True)
class SourceColumn:
    """A column of the dataset (or of the result) as DuckDB reads it."""

    name: str
    engine_type: str

    @property
    def type(self) -> datasets_pb2.ColumnType.ValueType:
        """Its logical type."""
        return column_type(self.engine_type)


@dataclass(frozen=True, slots=True)
class Query:
    """One parameterised statement and the names of its output columns, in order."""

    sql: str
    params: tuple[Any, ...]
    columns: tuple[str, ...]


_NUMERIC = frozenset({datasets_pb2.COLUMN_TYPE_INTEGER, datasets_pb2.COLUMN_TYPE_FLOAT})
_ORDERED = _NUMERIC | {
    datasets_pb2.COLUMN_TYPE_STRING,
    datasets_pb2.COLUMN_TYPE_DATE,
    datasets_pb2.COLUMN_TYPE_TIMESTAMP,
}
_ANY = frozenset(datasets_pb2.ColumnType.values())

F = analytics_pb2
# function -> (default alias prefix, the column types it accepts).
_FUNCTIONS: Mapping[int, tuple[str, frozenset[int]]] = {
    F.MEASURE_FUNCTION_COUNT: ("count", _ANY),
    F.MEASURE_FUNCTION_COUNT_DISTINCT: ("count_distinct", _ANY),
    F.MEASURE_FUNCTION_SUM: ("sum", _NUMERIC),
    F.MEASURE_FUNCTION_AVG: ("avg", _NUMERIC),
    F.MEASURE_FUNCTION_MIN: ("min", _ORDERED),
    F.MEASURE_FUNCTION_MAX: ("max", _ORDERED),
    F.MEASURE_FUNCTION_P50: ("p50", _NUMERIC),
    F.MEASURE_FUNCTION_P95: ("p95", _NUMERIC),
}
_GRANULARITIES: Mapping[int, str] = {
    F.TIME_GRANULARITY_HOUR: "hour",
    F.TIME_GRANULARITY_DAY: "day",
    # DuckDB's 'week' is the ISO week: it starts on Monday.
    F.TIME_GRANULARITY_WEEK: "week",
    F.TIME_GRANULARITY_MONTH: "month",
}
_COMPARISONS: Mapping[int, str] = {
    F.FILTER_OPERATOR_EQ: "=",
    F.FILTER_OPERATOR_NE: "<>",
    F.FILTER_OPERATOR_LT: "<",
    F.FILTER_OPERATOR_LE: "<=",
    F.FILTER_OPERATOR_GT: ">",
    F.FILTER_OPERATOR_GE: ">=",
}
# Which Value field fits a column type, and the cast its parameter gets.
_VALUE_FIELDS: Mapping[int, frozenset[str]] = {
    datasets_pb2.COLUMN_TYPE_INTEGER: frozenset({"int_value", "double_value"}),
    datasets_pb2.COLUMN_TYPE_FLOAT: frozenset({"int_value", "double_value"}),
    datasets_pb2.COLUMN_TYPE_STRING: frozenset({"string_value"}),
    datasets_pb2.COLUMN_TYPE_BOOLEAN: frozenset({"bool_value"}),
    datasets_pb2.COLUMN_TYPE_DATE: frozenset({"date_value"}),
    datasets_pb2.COLUMN_TYPE_TIMESTAMP: frozenset({"timestamp_value"}),
}
_CASTS = {
    "int_value": "BIGINT",
    "double_value": "DOUBLE",
    "string_value": "VARCHAR",
    "bool_value": "BOOLEAN",
    "date_value": "DATE",
    "timestamp_value": "TIMESTAMP",
}
_TYPE_NAMES = {
    datasets_pb2.COLUMN_TYPE_INTEGER: "integer",
    datasets_pb2.COLUMN_TYPE_FLOAT: "floating-point",
    datasets_pb2.COLUMN_TYPE_BOOLEAN: "boolean",
    datasets_pb2.COLUMN_TYPE_STRING: "text",
    datasets_pb2.COLUMN_TYPE_DATE: "date",
    datasets_pb2.COLUMN_TYPE_TIMESTAMP: "timestamp",
    datasets_pb2.COLUMN_TYPE_OTHER: "non-scalar",
}
_EPOCH = datetime.datetime(1970, 1, 1)


def _fail(reason: str, message: str, *, column: str, field: str) -> PermanentError:
    return PermanentError(message, reason=reason, metadata={"column": column, "field": field})


class _Builder:
    def __init__(self, spec: analytics_pb2.AnalyticsSpec, columns: Sequence[SourceColumn]):
        self._spec = spec
        self._columns = {column.name: column for column in columns}
        self._available = ", ".join(repr(c.name) for c in columns[:20]) + (
            ", ..." if len(columns) > 20 else ""
        )
        self.select: list[str] = []
        self.outputs: list[str] = []
        self._folded: dict[str, str] = {}  # lower-cased output name -> its field
        self.params: list[Any] = []

    def column(self, name: str, field: str) -> SourceColumn:
        found = self._columns.get(name)
        if found is None:
            raise _fail(
                "UNKNOWN_COLUMN",
                f"{field}: the dataset has no column {name!r} (it has {self._available})",
                column=name,
                field=field,
            )
        return found

    def output(self, name: str, expression: str, field: str) -> None:
        # DuckDB folds the case of identifiers, quoted ones too: "Total" and "total" are
        # one name to it, so they clash here as well.
        clash = self._folded.get(name.lower())
        if clash is not None:
            raise _fail(
                "INVALID_QUERY",
                f"{field}: output column {name!r} is already the output of {clash}; give "
                "the measure another alias",
                column=name,
                field=field,
            )
        self._folded[name.lower()] = field
        self.outputs.append(name)
        self.select.append(f"{expression} AS {quote(name)}")

    def group(self) -> int:
        for index, name in enumerate(self._spec.group_by):
            field = f"group_by[{index}]"
            self.output(name, _narrowed(self.column(name, field)), field)
        if not self._spec.HasField("time_bucket"):
            return len(self._spec.group_by)
        bucket = self._spec.time_bucket
        column = self.column(bucket.column, "time_bucket.column")
        part = _GRANULARITIES.get(bucket.granularity)
        if part is None:
            raise _fail(
                "INVALID_QUERY",
                "time_bucket.granularity: choose hour, day, week or month",
                column=bucket.column,
                field="time_bucket.granularity",
            )
        truncated = f"date_trunc('{part}', {quote(column.name)})"
        if column.type == datasets_pb2.COLUMN_TYPE_DATE:
            truncated = f"CAST({truncated} AS DATE)"  # a bucket of dates stays a date
        elif column.type != datasets_pb2.COLUMN_TYPE_TIMESTAMP:
            raise _fail(
                "TYPE_MISMATCH",
                f"time_bucket.column: {column.name!r} is a {_TYPE_NAMES[column.type]} column "
                f"({column.engine_type}); a time bucket needs a date or timestamp column",
                column=column.name,
                field="time_bucket.column",
            )
        self.output(column.name, truncated, "time_bucket.column")
        return len(self._spec.group_by) + 1

    def measures(self) -> None:
        for index, measure in enumerate(self._spec.measures):
            field = f"measures[{index}]"
            entry = _FUNCTIONS.get(measure.function)
            if entry is None:
                raise _fail(
                    "INVALID_QUERY",
                    f"{field}.function: not a measure function",
                    column=measure.column,
                    field=f"{field}.function",
                )
            prefix, accepted = entry
            alias = measure.alias or (
                f"{prefix}_{measure.column}".lower() if measure.column else prefix
            )
            if not measure.column:
                if measure.function != F.MEASURE_FUNCTION_COUNT:
                    raise _fail(
                        "INVALID_QUERY",
                        f"{field}.column: {prefix.upper()} needs a column (only COUNT counts "
                        "rows without one)",
                        column="",
                        field=f"{field}.column",
                    )
                self.output(alias, "count(*)", f"{field}.alias")
                continue
            column = self.column(measure.column, f"{field}.column")
            if column.type not in accepted:
                raise _fail(
                    "TYPE_MISMATCH",
                    f"{field}: {prefix.upper()} does not apply to {column.name!r}, a "
                    f"{_TYPE_NAMES[column.type]} column ({column.engine_type})",
                    column=column.name,
                    field=f"{field}.column",
                )
            self.output(alias, _aggregate(measure.function, column), f"{field}.alias")

    def filters(self) -> list[str]:
        conditions = []
        for index, spec_filter in enumerate(self._spec.filters):
            field = f"filters[{index}]"
            column = self.column(spec_filter.column, f"{field}.column")
            name = quote(column.name)
            operator = spec_filter.operator
            if operator in (F.FILTER_OPERATOR_IS_NULL, F.FILTER_OPERATOR_IS_NOT_NULL):
                if spec_filter.HasField("value") or spec_filter.values:
                    raise _fail(
                        "INVALID_QUERY",
                        f"{field}: IS_NULL and IS_NOT_NULL take no value",
                        column=column.name,
                        field=f"{field}.value",
                    )
                negation = "NOT " if operator == F.FILTER_OPERATOR_IS_NOT_NULL else ""
                conditions.append(f"{name} IS {negation}NULL")
            elif operator == F.FILTER_OPERATOR_IN:
                if spec_filter.HasField("value") or not spec_filter.values:
                    raise _fail(
                        "INVALID_QUERY",
                        f"{field}: IN takes its operands in values (1 to 1,000), not value",
                        column=column.name,
                        field=f"{field}.values",
                    )
                operands = [
                    self._operand(column, value, f"{field}.values[{position}]")
                    for position, value in enumerate(spec_filter.values)
                ]
                conditions.append(f"{name} IN ({', '.join(operands)})")
            elif operator in _COMPARISONS:
                if spec_filter.values or not spec_filter.HasField("value"):
                    raise _fail(
                        "INVALID_QUERY",
                        f"{field}: a comparison takes its operand in value",
                        column=column.name,
                        field=f"{field}.value",
                    )
                operand = self._operand(column, spec_filter.value, f"{field}.value")
                conditions.append(f"{name} {_COMPARISONS[operator]} {operand}")
            else:
                raise _fail(
                    "INVALID_QUERY",
                    f"{field}.operator: not a filter operator",
                    column=column.name,
                    field=f"{field}.operator",
                )
        return conditions

    def _operand(self, column: SourceColumn, value: datasets_pb2.Value, field: str) -> str:
        kind = value.WhichOneof("kind")
        if kind is None or kind == "null_value":
            raise _fail(
                "INVALID_QUERY",
                f"{field}: a comparison needs a value (use IS_NULL to find NULLs)",
                column=column.name,
                field=field,
            )
        if kind not in _VALUE_FIELDS.get(column.type, frozenset()):
            raise _fail(
                "TYPE_MISMATCH",
                f"{field}: a {kind.removesuffix('_value')} value does not fit {column.name!r}, "
                f"a {_TYPE_NAMES[column.type]} column ({column.engine_type})",
                column=column.name,
                field=field,
            )
        try:
            self.params.append(_parameter(value, kind))
        except (ValueError, OverflowError):
            raise _fail(
                "INVALID_QUERY",
                f"{field}: not a valid {kind.removesuffix('_value')} (years 1 to 9999)",
                column=column.name,
                field=field,
            ) from None
        return f"CAST(? AS {_CASTS[kind]})"

    def order(self) -> list[str]:
        keys: list[str] = []
        seen: set[str] = set()
        for index, order in enumerate(self._spec.order_by):
            field = f"order_by[{index}].column"
            name = order.column
            if name not in self.outputs:
                raise _fail(
                    "UNKNOWN_COLUMN",
                    f"{field}: {order.column!r} is not an output column (the output has "
                    f"{', '.join(repr(n) for n in self.outputs)})",
                    column=order.column,
                    field=field,
                )
            if name in seen:
                raise _fail(
                    "INVALID_QUERY",
                    f"{field}: {name!r} is sorted on twice",
                    column=name,
                    field=field,
                )
            seen.add(name)
            keys.append(f"{quote(name)} {'DESC' if order.descending else 'ASC'} NULLS LAST")
        # Then every other output column ascending, group columns first: the default order
        # when none is given, and the tie-breaker that makes any order total.
        keys += [f"{quote(n)} ASC NULLS LAST" for n in self.outputs if n not in seen]
        return keys


def _narrowed(column: SourceColumn, function: str = "") -> str:
    """``column`` (or ``function(column)``) as output: integers wider than 64 bits become
    BIGINT, the integers of Value and of Parquet (which would store a HUGEINT as a double).
    DuckDB's JSON reader infers HUGEINT for plain integer fields, for one."""
    expression = f"{function}({quote(column.name)})" if function else quote(column.name)
    if column.engine_type.upper() in _WIDE_INTEGERS:
        return f"CAST({expression} AS BIGINT)"
    return expression


def _aggregate(function: int, column: SourceColumn) -> str:
    name = quote(column.name)
    floating = column.engine_type.upper() in _FLOATS
    if function == F.MEASURE_FUNCTION_COUNT:
        return f"count({name})"
    if function == F.MEASURE_FUNCTION_COUNT_DISTINCT:
        return f"count(DISTINCT {name})"
    if function == F.MEASURE_FUNCTION_SUM:
        if column.type == datasets_pb2.COLUMN_TYPE_INTEGER:
            # DuckDB sums integers into a 128-bit integer; the result stays a 64-bit one
            # (Value.int_value, and Parquet has no 128-bit integers).
            return f"CAST(sum({name}) AS BIGINT)"
        # Kahan-Babuska summation: a float sum that does not depend, in practice, on how
        # the threads split the rows, so the same spec gives the same digits.
        return f"fsum({name})" if floating else f"sum({name})"
    if function == F.MEASURE_FUNCTION_AVG:
        return f"favg({name})" if floating else f"avg({name})"
    if function == F.MEASURE_FUNCTION_MIN:
        return _narrowed(column, "min")
    if function == F.MEASURE_FUNCTION_MAX:
        return _narrowed(column, "max")
    quantile = "0.5" if function == F.MEASURE_FUNCTION_P50 else "0.95"
    return f"quantile_cont({name}, {quantile})"


def _parameter(value: datasets_pb2.Value, kind: str) -> Any:
    """The Python value DuckDB binds for ``value`` (ValueError, OverflowError: none)."""
    if kind == "date_value":
        date = value.date_value
        return datetime.date(date.year, date.month, date.day)
    if kind == "timestamp_value":
        # A naive UTC datetime: compared with a zoned column, DuckDB casts it in the
        # session's zone, which the analytics connection sets to UTC.
        stamp = value.timestamp_value
        return _EPOCH + datetime.timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)
    return getattr(value, kind)


def build_query(
    spec: analytics_pb2.AnalyticsSpec,
    columns: Sequence[SourceColumn],
    source: str,
    source_params: Sequence[Any],
) -> Query:
    """The statement that answers ``spec`` over ``source`` (a table function whose own
    parameters are ``source_params``), given the source's ``columns``.

    Raises PermanentError (``UNKNOWN_COLUMN``, ``TYPE_MISMATCH``, ``INVALID_QUERY``) with
    the column and the spec field in its metadata.
    """
    if not spec.measures:
        raise PermanentError("measures: give at least one measure", reason="INVALID_QUERY")
    builder = _Builder(spec, columns)
    groups = builder.group()
    builder.measures()
    conditions = builder.filters()
    keys = builder.order()
    inner = f"SELECT {', '.join(builder.select)} FROM {source}"
    if conditions:
        inner += " WHERE " + " AND ".join(f"({c})" for c in conditions)
    if groups:
        inner += " GROUP BY " + ", ".join(str(i) for i in range(1, groups + 1))
    sql = f"SELECT * FROM ({inner}) ORDER BY {', '.join(keys)}"
    if spec.limit > 0:
        sql += f" LIMIT {int(spec.limit)}"
    return Query(
        sql=sql,
        params=(*source_params, *builder.params),
        columns=tuple(builder.outputs),
    )
