"""The profile's HTML report: one self-contained page, tables and inline SVG histograms.

No scripts, styles or images from elsewhere (a report is read offline, attached to a
review): the style sheet is inline and every histogram is an ``<svg>`` of its own. Every
value from the dataset (column names, cells) is escaped: a dataset is user input.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta

from agentic.tasks.v1 import datasets_pb2, profile_dataset_pb2

__all__ = ["render"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; }
th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
section { border-top: 1px solid #ddd; margin-top: 1.5rem; }
svg rect { fill: #4a7fb5; }
svg text { font-size: 10px; fill: #555; }
"""

_BAR_WIDTH = 600
_BAR_HEIGHT = 120


def text(value: datasets_pb2.Value) -> str:
    """A Value as a person reads it (unescaped)."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return ""
    if kind == "date_value":
        d = value.date_value
        return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
    if kind == "timestamp_value":
        ts = value.timestamp_value
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
            seconds=ts.seconds, microseconds=ts.nanos // 1000
        )
        return moment.isoformat().replace("+00:00", "Z")
    if kind == "double_value":
        return f"{value.double_value:.6g}"
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    return str(getattr(value, kind))


def _cell(content: str, *, numeric: bool = False) -> str:
    cls = ' class="n"' if numeric else ""
    return f"<td{cls}>{html.escape(content)}</td>"


def _svg(column: profile_dataset_pb2.ColumnProfile) -> str:
    bins = column.histogram
    top = max((b.count for b in bins), default=0) or 1
    width = _BAR_WIDTH / len(bins)
    bars = []
    for index, b in enumerate(bins):
        height = _BAR_HEIGHT * b.count / top
        label = html.escape(f"[{text(b.lower)}, {text(b.upper)}): {b.count}")
        bars.append(
            f'<rect x="{index * width:.2f}" y="{_BAR_HEIGHT - height:.2f}" '
            f'width="{max(width - 1, 0.5):.2f}" height="{height:.2f}"><title>{label}</title></rect>'
        )
    low, high = html.escape(text(bins[0].lower)), html.escape(text(bins[-1].upper))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_BAR_WIDTH}" '
        f'height="{_BAR_HEIGHT + 14}" role="img" aria-label="histogram">'
        + "".join(bars)
        + f'<text x="0" y="{_BAR_HEIGHT + 12}">{low}</text>'
        + f'<text x="{_BAR_WIDTH}" y="{_BAR_HEIGHT + 12}" text-anchor="end">{high}</text></svg>'
    )


def _column(column: profile_dataset_pb2.ColumnProfile, rows: int) -> str:
    c = column.column
    stats: list[tuple[str, str]] = [
        ("type", f"{datasets_pb2.ColumnType.Name(c.type).removeprefix('COLUMN_TYPE_')}"),
        ("engine type", c.engine_type),
        ("nulls", f"{column.null_count} ({100 * column.null_count / max(rows, 1):.1f}%)"),
        ("distinct (approx.)", str(column.approx_distinct)),
    ]
    if column.HasField("min"):
        stats.append(("min", text(column.min)))
    if column.HasField("max"):
        stats.append(("max", text(column.max)))
    if column.HasField("mean"):
        stats.append(("mean", f"{column.mean:.6g}"))
    if column.HasField("stddev"):
        stats.append(("std. dev.", f"{column.stddev:.6g}"))
    for label, value in (("p25", column.p25), ("median", column.p50), ("p75", column.p75)):
        if value.WhichOneof("kind") is not None:
            stats.append((label, text(value)))
    parts = [
        f"<section><h2>{html.escape(c.name)}</h2><table>",
        *(f"<tr><th>{html.escape(k)}</th>{_cell(v)}</tr>" for k, v in stats),
        "</table>",
    ]
    if column.top_values:
        parts.append("<table><tr><th>most frequent</th><th>rows</th></tr>")
        parts += [
            f"<tr>{_cell(text(v.value))}{_cell(str(v.count), numeric=True)}</tr>"
            for v in column.top_values
        ]
        parts.append("</table>")
    if column.histogram:
        parts.append(_svg(column))
    parts.append("</section>")
    return "\n".join(parts)


def render(profile: profile_dataset_pb2.DatasetProfile, title: str) -> str:
    """The whole page for ``profile`` of the dataset called ``title``."""
    overview = "".join(
        f"<tr>{_cell(c.column.name)}"
        f"{_cell(datasets_pb2.ColumnType.Name(c.column.type).removeprefix('COLUMN_TYPE_'))}"
        f"{_cell(str(c.null_count), numeric=True)}{_cell(str(c.approx_distinct), numeric=True)}"
        "</tr>"
        for c in profile.columns
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>Profile of {html.escape(title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>Profile of {html.escape(title)}</h1>",
            f"<p>{profile.row_count} rows, {len(profile.columns)} columns, "
            f"{profile.size_bytes} bytes of {html.escape(profile.format)}.</p>",
            "<table><tr><th>column</th><th>type</th><th>nulls</th>"
            f"<th>distinct (approx.)</th></tr>{overview}</table>",
            *(_column(c, profile.row_count) for c in profile.columns),
            "</body></html>",
        ]
    )
