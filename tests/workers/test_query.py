"""RunAnalytics' query builder on its own: typed spec -> (sql, params), checked and run.

Pure unit tests: ``build_query`` against column lists, and its statements run by a plain
DuckDB connection over small tables written here, compared with results worked out by
hand or in plain Python.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from agentic.tasks.v1 import analytics_pb2 as a
from agentic.tasks.v1 import datasets_pb2 as d
from google.protobuf import struct_pb2, timestamp_pb2

from workers._context import PermanentError
from workers._duckdb import column_type, source
from workers._query import SourceColumn, build_query

INJECTION = 'x"; DROP TABLE t; --'

COLUMNS = [
    SourceColumn("id", "BIGINT"),
    SourceColumn("region", "VARCHAR"),
    SourceColumn("amount", "DOUBLE"),
    SourceColumn("price", "DECIMAL(10,2)"),
    SourceColumn("ts", "TIMESTAMP"),
    SourceColumn("day", "DATE"),
    SourceColumn("flag", "BOOLEAN"),
    SourceColumn("tags", "VARCHAR[]"),
]


def _measure(function: int, column: str = "", alias: str = "") -> a.Measure:
    return a.Measure(function=function, column=column, alias=alias)  # type: ignore[arg-type]


def _spec(**fields: Any) -> a.AnalyticsSpec:
    fields.setdefault("measures", [_measure(a.MEASURE_FUNCTION_COUNT)])
    return a.AnalyticsSpec(**fields)


def _fails(spec: a.AnalyticsSpec, reason: str, column: str, field: str = "") -> PermanentError:
    with pytest.raises(PermanentError) as info:
        build_query(spec, COLUMNS, source("parquet"), ["/nowhere.parquet"])
    assert info.value.reason == reason, info.value.message
    assert info.value.metadata.get("column") == column, info.value.metadata
    if field:
        assert info.value.metadata.get("field") == field, info.value.metadata
    return info.value


def _date(year: int, month: int, day: int) -> d.Value:
    value = d.Value()
    value.date_value.year, value.date_value.month, value.date_value.day = year, month, day
    return value


def _filter(column: str, operator: int, value: d.Value | None = None, **more: Any) -> a.Filter:
    return a.Filter(column=column, operator=operator, value=value, **more)  # type: ignore[arg-type]


def test_engine_types_map_to_logical_types() -> None:
    assert column_type("BIGINT") == d.COLUMN_TYPE_INTEGER
    assert column_type("UTINYINT") == d.COLUMN_TYPE_INTEGER
    assert column_type("DECIMAL(18,3)") == d.COLUMN_TYPE_FLOAT
    assert column_type("DOUBLE") == d.COLUMN_TYPE_FLOAT
    assert column_type("VARCHAR") == d.COLUMN_TYPE_STRING
    assert column_type("TIMESTAMP WITH TIME ZONE") == d.COLUMN_TYPE_TIMESTAMP
    assert column_type("TIMESTAMP_NS") == d.COLUMN_TYPE_TIMESTAMP
    assert column_type("DATE") == d.COLUMN_TYPE_DATE
    assert column_type("BOOLEAN") == d.COLUMN_TYPE_BOOLEAN
    assert column_type("VARCHAR[]") == d.COLUMN_TYPE_OTHER
    assert column_type("STRUCT(a INTEGER)") == d.COLUMN_TYPE_OTHER


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (_spec(group_by=["regoin"]), "group_by[0]"),
        (_spec(measures=[_measure(a.MEASURE_FUNCTION_SUM, "regoin")]), "measures[0].column"),
        (
            _spec(filters=[_filter("regoin", a.FILTER_OPERATOR_IS_NULL)]),
            "filters[0].column",
        ),
        (
            _spec(time_bucket=a.TimeBucket(column="regoin", granularity=a.TIME_GRANULARITY_DAY)),
            "time_bucket.column",
        ),
        # Names match exactly (DuckDB alone would fold the case).
        (_spec(group_by=["REGION"]), "group_by[0]"),
    ],
)
def test_an_unknown_column_fails_naming_it(spec: a.AnalyticsSpec, field: str) -> None:
    column = spec.group_by[0] if spec.group_by else "regoin"
    _fails(spec, "UNKNOWN_COLUMN", column, field)


def test_an_injection_shaped_name_is_just_an_unknown_column() -> None:
    error = _fails(_spec(group_by=[INJECTION]), "UNKNOWN_COLUMN", INJECTION, "group_by[0]")
    assert "DROP" in error.message  # named back to the caller, never run
    _fails(
        _spec(measures=[_measure(a.MEASURE_FUNCTION_MAX, INJECTION)]),
        "UNKNOWN_COLUMN",
        INJECTION,
    )


def test_order_by_names_output_columns_only() -> None:
    # "amount" is a column of the dataset, but not of this output.
    _fails(
        _spec(group_by=["region"], order_by=[a.OrderBy(column="amount")]),
        "UNKNOWN_COLUMN",
        "amount",
        "order_by[0].column",
    )
    _fails(
        _spec(group_by=["region"], order_by=[a.OrderBy(column="region")] * 2),
        "INVALID_QUERY",
        "region",
        "order_by[1].column",
    )


@pytest.mark.parametrize("function", [a.MEASURE_FUNCTION_SUM, a.MEASURE_FUNCTION_AVG])
def test_arithmetic_over_text_is_a_type_mismatch(function: int) -> None:
    _fails(
        _spec(measures=[_measure(function, "region")]),
        "TYPE_MISMATCH",
        "region",
        "measures[0].column",
    )


@pytest.mark.parametrize(
    ("function", "column"),
    [
        (a.MEASURE_FUNCTION_P95, "ts"),
        (a.MEASURE_FUNCTION_P50, "flag"),
        (a.MEASURE_FUNCTION_MIN, "flag"),
        (a.MEASURE_FUNCTION_MAX, "tags"),
        (a.MEASURE_FUNCTION_SUM, "day"),
    ],
)
def test_measures_that_do_not_fit_the_column_type(function: int, column: str) -> None:
    _fails(_spec(measures=[_measure(function, column)]), "TYPE_MISMATCH", column)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("id", d.Value(string_value="7")),
        ("amount", d.Value(bool_value=True)),
        ("region", d.Value(int_value=3)),
        ("ts", _date(2024, 1, 1)),
        ("day", d.Value(timestamp_value=timestamp_pb2.Timestamp(seconds=0))),
        ("flag", d.Value(int_value=1)),
        ("tags", d.Value(string_value="a")),
    ],
)
def test_a_filter_value_of_another_type_is_a_type_mismatch(column: str, value: d.Value) -> None:
    _fails(
        _spec(filters=[_filter(column, a.FILTER_OPERATOR_EQ, value)]),
        "TYPE_MISMATCH",
        column,
        "filters[0].value",
    )
    _fails(
        _spec(filters=[_filter(column, a.FILTER_OPERATOR_IN, values=[value])]),
        "TYPE_MISMATCH",
        column,
        "filters[0].values[0]",
    )


def test_a_time_bucket_needs_a_date_or_timestamp() -> None:
    bucket = a.TimeBucket(column="region", granularity=a.TIME_GRANULARITY_DAY)
    _fails(_spec(time_bucket=bucket), "TYPE_MISMATCH", "region", "time_bucket.column")


@pytest.mark.parametrize(
    ("spec", "column"),
    [
        # Two measures with one name (given, or the default "<function>_<column>").
        (
            _spec(
                measures=[
                    _measure(a.MEASURE_FUNCTION_SUM, "amount", "total"),
                    _measure(a.MEASURE_FUNCTION_AVG, "amount", "total"),
                ]
            ),
            "total",
        ),
        (
            _spec(
                measures=[
                    _measure(a.MEASURE_FUNCTION_SUM, "amount"),
                    _measure(a.MEASURE_FUNCTION_AVG, "amount", "sum_amount"),
                ]
            ),
            "sum_amount",
        ),
        # DuckDB folds case, so these are one name too.
        (
            _spec(
                measures=[
                    _measure(a.MEASURE_FUNCTION_COUNT, "", "Total"),
                    _measure(a.MEASURE_FUNCTION_COUNT, "id", "total"),
                ]
            ),
            "total",
        ),
        # A measure named like a group column, and a bucket over a grouped column.
        (_spec(group_by=["region"], measures=[_measure(1, "id", "region")]), "region"),
        (
            _spec(
                group_by=["ts"],
                time_bucket=a.TimeBucket(column="ts", granularity=a.TIME_GRANULARITY_DAY),
            ),
            "ts",
        ),
    ],
)
def test_output_name_clashes_are_invalid(spec: a.AnalyticsSpec, column: str) -> None:
    _fails(spec, "INVALID_QUERY", column)


@pytest.mark.parametrize(
    "spec",
    [
        _spec(measures=[_measure(a.MEASURE_FUNCTION_COUNT_DISTINCT)]),
        _spec(measures=[_measure(a.MEASURE_FUNCTION_SUM)]),
        _spec(
            filters=[_filter("id", a.FILTER_OPERATOR_IS_NULL, d.Value(int_value=1))],
        ),
        _spec(filters=[_filter("id", a.FILTER_OPERATOR_IN, d.Value(int_value=1))]),
        _spec(filters=[_filter("id", a.FILTER_OPERATOR_EQ)]),
        _spec(
            filters=[_filter("id", a.FILTER_OPERATOR_EQ, d.Value(null_value=struct_pb2.NULL_VALUE))]
        ),
        _spec(
            filters=[
                _filter(
                    "day",
                    a.FILTER_OPERATOR_EQ,
                    _date(2024, 2, 30),
                )
            ]
        ),
        a.AnalyticsSpec(group_by=["region"]),
    ],
)
def test_malformed_specs_are_invalid(spec: a.AnalyticsSpec) -> None:
    with pytest.raises(PermanentError) as info:
        build_query(spec, COLUMNS, source("parquet"), ["/nowhere.parquet"])
    assert info.value.reason == "INVALID_QUERY", info.value.message


def test_values_are_bound_never_spliced() -> None:
    hostile = "'); DROP TABLE t; --"
    query = build_query(
        _spec(filters=[_filter("region", a.FILTER_OPERATOR_EQ, d.Value(string_value=hostile))]),
        COLUMNS,
        source("parquet"),
        ["/data.parquet"],
    )
    assert hostile not in query.sql
    assert "DROP" not in query.sql
    assert query.params == ("/data.parquet", hostile)


# --- statements run by DuckDB ---------------------------------------------------------


def _run(path: Path, spec: a.AnalyticsSpec) -> list[tuple[Any, ...]]:
    connection = duckdb.connect(":memory:")
    connection.execute("SET TimeZone = 'UTC'")
    reader = source("parquet")
    columns = [
        SourceColumn(str(r[0]), str(r[1]))
        for r in connection.execute(f"DESCRIBE SELECT * FROM {reader}", [str(path)]).fetchall()
    ]
    query = build_query(spec, columns, reader, [str(path)])
    rows = connection.execute(query.sql, list(query.params)).fetchall()
    connection.close()
    return rows


def test_a_column_with_an_injection_shaped_name_works_as_a_column(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({INJECTION: ["a", "b", "a", None], "n": [1, 2, 3, 4]}), path)
    spec = _spec(
        group_by=[INJECTION],
        measures=[
            _measure(a.MEASURE_FUNCTION_SUM, "n"),
            _measure(a.MEASURE_FUNCTION_MAX, INJECTION),
        ],
    )
    assert _run(path, spec) == [("a", 4, "a"), ("b", 2, "b"), (None, 4, None)]


def test_buckets_filters_and_the_total_order(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    stamps = [
        datetime.datetime(2024, 1, 7, 23, 59),  # a Sunday: ISO week of Monday 2024-01-01
        datetime.datetime(2024, 1, 8, 0, 0),  # Monday
        datetime.datetime(2024, 1, 1, 12, 0),
        datetime.datetime(2024, 2, 29, 8, 30),
        None,
    ]
    table = pa.table(
        {
            "ts": pa.array(stamps, pa.timestamp("us")),
            "day": pa.array([s.date() if s else None for s in stamps], pa.date32()),
            "k": ["x", "y", "x", "x", "y"],
            "v": [1.0, 2.0, 4.0, 8.0, 16.0],
        }
    )
    pq.write_table(table, path)
    week = a.TimeBucket(column="ts", granularity=a.TIME_GRANULARITY_WEEK)
    rows = _run(path, _spec(time_bucket=week, measures=[_measure(a.MEASURE_FUNCTION_SUM, "v")]))
    assert rows == [
        (datetime.datetime(2024, 1, 1), 5.0),
        (datetime.datetime(2024, 1, 8), 2.0),
        (datetime.datetime(2024, 2, 26), 8.0),
        (None, 16.0),  # NULLs last
    ]
    # A bucket of dates stays a date; a month is the calendar month.
    month = a.TimeBucket(column="day", granularity=a.TIME_GRANULARITY_MONTH)
    assert _run(path, _spec(time_bucket=month)) == [
        (datetime.date(2024, 1, 1), 3),
        (datetime.date(2024, 2, 1), 1),
        (None, 1),
    ]
    # Sorted on a measure, ties broken by the other output columns; filters AND-ed.
    spec = _spec(
        group_by=["k"],
        time_bucket=a.TimeBucket(column="ts", granularity=a.TIME_GRANULARITY_HOUR),
        measures=[_measure(a.MEASURE_FUNCTION_COUNT, "", "n")],
        filters=[
            _filter("v", a.FILTER_OPERATOR_LT, d.Value(int_value=10)),
            _filter("k", a.FILTER_OPERATOR_NE, d.Value(string_value="z")),
        ],
        order_by=[a.OrderBy(column="n", descending=True)],
        limit=3,
    )
    assert _run(path, spec) == [
        ("x", datetime.datetime(2024, 1, 1, 12), 1),
        ("x", datetime.datetime(2024, 1, 7, 23), 1),
        ("x", datetime.datetime(2024, 2, 29, 8), 1),
    ]
    since = timestamp_pb2.Timestamp()
    since.FromDatetime(datetime.datetime(2024, 1, 7, 23, 59))
    spec = _spec(
        filters=[_filter("ts", a.FILTER_OPERATOR_GE, d.Value(timestamp_value=since))],
        measures=[_measure(a.MEASURE_FUNCTION_P50, "v"), _measure(a.MEASURE_FUNCTION_MIN, "day")],
    )
    assert _run(path, spec) == [(2.0, datetime.date(2024, 1, 7))]
