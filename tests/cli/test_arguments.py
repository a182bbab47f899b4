"""The CLI's own parsing, without a server: filters, measures, rates, flags in either place."""

from __future__ import annotations

import argparse

import pytest
from agentic.tasks.v1 import analytics_pb2 as anpb

from cli._app import build_parser
from cli._tasks import parse_filter, parse_measure, parse_time_bucket
from cli._transfer import parse_rate


@pytest.mark.parametrize(
    ("text", "column", "operator", "value"),
    [
        ("status=open", "status", anpb.FILTER_OPERATOR_EQ, "string_value"),
        ("status!=open", "status", anpb.FILTER_OPERATOR_NE, "string_value"),
        ("effort<=2.5", "effort", anpb.FILTER_OPERATOR_LE, "double_value"),
        ("count>=3", "count", anpb.FILTER_OPERATOR_GE, "int_value"),
        ("count<3", "count", anpb.FILTER_OPERATOR_LT, "int_value"),
        ("done>true", "done", anpb.FILTER_OPERATOR_GT, "bool_value"),
    ],
)
def test_comparison_filters(text: str, column: str, operator: int, value: str) -> None:
    parsed = parse_filter(text)
    assert (parsed.column, parsed.operator, parsed.value.WhichOneof("kind")) == (
        column,
        operator,
        value,
    )


def test_set_and_null_filters() -> None:
    within = parse_filter("priority~in~high,critical")
    assert within.operator == anpb.FILTER_OPERATOR_IN
    assert [v.string_value for v in within.values] == ["high", "critical"]
    assert parse_filter("owner~null").operator == anpb.FILTER_OPERATOR_IS_NULL
    assert parse_filter("owner~notnull").operator == anpb.FILTER_OPERATOR_IS_NOT_NULL
    with pytest.raises(argparse.ArgumentTypeError):
        parse_filter("owner~like~x")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_filter("no operator")


def test_measures_and_time_buckets() -> None:
    assert parse_measure("count") == anpb.Measure(function=anpb.MEASURE_FUNCTION_COUNT)
    assert parse_measure("p95:effort_hours=p95_effort") == anpb.Measure(
        function=anpb.MEASURE_FUNCTION_P95, column="effort_hours", alias="p95_effort"
    )
    assert parse_measure("count_distinct:owner").function == anpb.MEASURE_FUNCTION_COUNT_DISTINCT
    with pytest.raises(argparse.ArgumentTypeError, match="one of count, count_distinct"):
        parse_measure("median:x")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_measure("unspecified")
    assert parse_time_bucket("created:week") == anpb.TimeBucket(
        column="created", granularity=anpb.TIME_GRANULARITY_WEEK
    )
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time_bucket("created:fortnight")


def test_rates() -> None:
    assert parse_rate("500K") == 500 * 1024
    assert parse_rate("20M") == 20 * 1024**2
    assert parse_rate("1.5g") == int(1.5 * 1024**3)
    assert parse_rate("1000") == 1000
    for bad in ("0", "fast", "-1M", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_rate(bad)


def test_connection_flags_go_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--output", "json", "--address", "h:1", "tasks", "get", "x"])
    after = parser.parse_args(["tasks", "get", "x", "--output", "json", "--address", "h:1"])
    default = parser.parse_args(["tasks", "get", "x"])
    assert (before.output, before.address) == (after.output, after.address) == ("json", "h:1")
    assert (default.output, default.address, default.rpc_timeout) == ("human", None, 30.0)


def test_bad_usage_exits_64_and_help_documents_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as bad:
        parser.parse_args(["tasks", "submit", "probe", "--steps", "x"])
    assert bad.value.code == 64
    with pytest.raises(SystemExit) as shown:
        parser.parse_args(["tasks", "submit", "probe", "--help"])
    assert shown.value.code == 0
    help_text = capsys.readouterr().out
    for line in ("0    the task SUCCEEDED", "2    the task was CANCELLED", "64   bad usage"):
        assert line in help_text
