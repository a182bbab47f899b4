"""Messages as tables for people: a generic key/value view, lists, and each task kind's result.

Only the human mode comes here; ``--output json`` prints ``MessageToDict`` of the same
messages instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agentic.tasks.v1 import compliance_report_pb2 as cpb
from agentic.tasks.v1 import datasets_pb2 as dpb
from agentic.tasks.v1 import tasks_pb2 as tpb
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

__all__ = [
    "Column",
    "enum_name",
    "fmt_bytes",
    "render_list",
    "render_message",
    "render_task",
    "value_text",
]

Column = tuple[str, Callable[[Any], object]]
"""A list column: its header and how to read the cell from one message."""


def enum_name(message: Message, field: str) -> str:
    """The name of an enum field's value without its type prefix (TASK_STATE_RUNNING -> RUNNING)."""
    descriptor = message.DESCRIPTOR.fields_by_name[field].enum_type
    assert descriptor is not None, f"{field} is not an enum field"
    number = getattr(message, field)
    value = descriptor.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = _enum_prefix(descriptor.name)
    return value.name.removeprefix(prefix)


def _enum_prefix(type_name: str) -> str:
    # TaskState -> TASK_STATE_, the buf STANDARD lint rule for enum value prefixes.
    out = []
    for i, char in enumerate(type_name):
        if char.isupper() and i:
            out.append("_")
        out.append(char.upper())
    return "".join(out) + "_"


def fmt_bytes(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # unreachable; keeps mypy's return check simple


def _time(message: Message, field: str) -> str:
    if not message.HasField(field):
        return ""
    return str(getattr(message, field).ToJsonString())


def value_text(value: dpb.Value) -> str:
    """A dataset cell as text."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return "null"
    if kind == "date_value":
        d = value.date_value
        return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
    if kind == "timestamp_value":
        return str(value.timestamp_value.ToJsonString())
    if kind == "double_value":
        return f"{value.double_value:.6g}"
    return str(getattr(value, kind))


def _cell(value: object) -> str:
    if isinstance(value, Message):
        return json.dumps(json_format.MessageToDict(value, preserving_proto_field_name=True))
    return "" if value is None else str(value)


def render_list(
    console: Console, title: str, messages: Iterable[Message], columns: Sequence[Column]
) -> None:
    """A table of ``messages``, one row each."""
    rows = [[_cell(read(message)) for _, read in columns] for message in messages]
    table = Table(title=title, title_justify="left")
    for i, (header, _) in enumerate(columns):
        if i == 0:
            # The first column is the id to pass to the next command: never cut it.
            width = max([len(header), *(len(row[0]) for row in rows)])
            table.add_column(header, no_wrap=True, min_width=width)
        else:
            table.add_column(header)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def render_message(console: Console, title: str, message: Message) -> None:
    """A two-column table of a message's set fields (nested messages as compact JSON)."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    flat = json_format.MessageToDict(message, preserving_proto_field_name=True)
    for name, value in flat.items():
        text = value if isinstance(value, str) else json.dumps(value)
        table.add_row(name, text)
    console.print(table)


TASK_COLUMNS: list[Column] = [
    ("id", lambda t: t.id),
    ("kind", lambda t: enum_name(t, "kind")),
    ("state", lambda t: enum_name(t, "state")),
    ("progress", lambda t: f"{t.progress.fraction:.0%}"),
    ("attempt", lambda t: t.attempt),
    ("owner", lambda t: t.owner_id),
    ("created", lambda t: _time(t, "create_time")),
]


def render_task(console: Console, task: tpb.Task) -> None:
    """A task's summary, then its result or error in the form of its kind."""
    table = Table(show_header=False, title=f"task {task.id}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("kind", enum_name(task, "kind"))
    table.add_row("state", enum_name(task, "state"))
    table.add_row("attempt", str(task.attempt))
    table.add_row("progress", f"{task.progress.fraction:.0%} {task.progress.message}".strip())
    table.add_row("owner", task.owner_id)
    if task.project_id:
        table.add_row("project", task.project_id)
    for field in ("create_time", "start_time", "end_time"):
        if task.HasField(field):
            table.add_row(field.removesuffix("_time"), _time(task, field))
    console.print(table)
    outcome = task.WhichOneof("outcome")
    if outcome is None:
        return
    if outcome == "error":
        console.print(f"[red]error[/red] {task.error.message}", markup=True)
        return
    renderer = _RESULTS.get(outcome)
    if renderer is not None:
        renderer(console, task)
    else:
        render_message(console, outcome, getattr(task, outcome))


def _probe(console: Console, task: tpb.Task) -> None:
    result = task.probe_result
    elapsed = result.elapsed.ToTimedelta().total_seconds()
    console.print(f"probe: {result.steps_completed} steps in {elapsed:.2f} s")


def _profile(console: Console, task: tpb.Task) -> None:
    result = task.profile_dataset_result
    profile = result.profile
    console.print(
        f"dataset: {profile.row_count} rows, {fmt_bytes(profile.size_bytes)}, {profile.format}"
    )
    for column in profile.columns:
        table = Table(
            title=f"column {column.column.name} ({enum_name(column.column, 'type')})",
            title_justify="left",
            show_header=False,
        )
        table.add_column("statistic", style="bold")
        table.add_column("value")
        table.add_row("nulls", str(column.null_count))
        table.add_row("distinct (approx.)", str(column.approx_distinct))
        for name in ("min", "p25", "p50", "p75", "max"):
            if column.HasField(name):
                table.add_row(name, value_text(getattr(column, name)))
        if column.HasField("mean"):
            table.add_row("mean", f"{column.mean:.6g}")
        if column.HasField("stddev"):
            table.add_row("stddev", f"{column.stddev:.6g}")
        if column.top_values:
            table.add_row(
                "top values",
                ", ".join(f"{value_text(v.value)} ({v.count})" for v in column.top_values),
            )
        console.print(table)
    if result.report_artifact_id:
        console.print(f"report artifact: {result.report_artifact_id}")


def _analytics(console: Console, task: tpb.Task) -> None:
    result = task.analytics_result
    table = Table(title=f"{result.row_count} rows ({len(result.rows)} shown)", title_justify="left")
    for column in result.columns:
        table.add_column(column.name)
    for row in result.rows:
        table.add_row(*(value_text(cell) for cell in row.cells))
    console.print(table)
    console.print(f"parquet artifact: {result.parquet_artifact_id}")
    console.print(f"csv artifact: {result.csv_artifact_id}")


_STATUS_STYLE = {
    cpb.PROCESS_STATUS_COMPLIANT: "green",
    cpb.PROCESS_STATUS_PARTIAL: "yellow",
    cpb.PROCESS_STATUS_MISSING: "red",
}


def _compliance(console: Console, task: tpb.Task) -> None:
    result = task.compliance_report_result
    table = Table(
        title=f"rule set {result.rule_set_id} {result.rule_set_version}", title_justify="left"
    )
    for header in ("process", "name", "status", "missing work products", "findings"):
        table.add_column(header)
    for process in result.processes:
        style = _STATUS_STYLE.get(process.status, "")
        status = enum_name(process, "status")
        table.add_row(
            process.process_id,
            process.name,
            f"[{style}]{status}[/{style}]" if style else status,
            ", ".join(process.missing_work_products),
            str(len(process.findings)),
        )
    console.print(table)
    totals = result.totals
    console.print(
        f"{totals.compliant} compliant, {totals.partial} partial, {totals.missing} missing of "
        f"{totals.processes} processes; {totals.errors} errors, {totals.warnings} warnings"
    )
    for coverage in result.coverage:
        console.print(
            f"coverage {coverage.level}: {coverage.covered}/{coverage.items} ({coverage.ratio:.0%})"
        )
    console.print(f"report artifacts: html {result.html_artifact_id}, pdf {result.pdf_artifact_id}")


_RESULTS: dict[str, Callable[[Console, tpb.Task], None]] = {
    "probe_result": _probe,
    "profile_dataset_result": _profile,
    "analytics_result": _analytics,
    "compliance_report_result": _compliance,
}
