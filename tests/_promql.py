"""PromQL as the tests read it: metric and label names, the code's declared metrics, and
the expressions of the Grafana dashboard.

The readers are regular expressions, not a PromQL parser: they understand what the rules
file and the dashboard write (selectors, ranges, ``offset``, aggregations with ``by`` /
``without``, vector matching with ``on`` / ``ignoring`` / ``group_left`` / ``group_right``,
numbers and strings), and ``tests/test_alert_rules.py`` pins them down on examples.

``exported_names()`` scans the process code for metric declarations (prometheus_client's
``Counter``/``Gauge``/``Histogram``/``Summary`` and the ``*MetricFamily`` of custom
collectors) without starting anything; comparing with a live scrape is the job of the
checks that start the stack.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cache_sidecar._metrics import Counter as SidecarCounter
from tests._support import REPO

__all__ = [
    "PROMETHEUS_SERIES",
    "dashboard_expressions",
    "dashboard_panels",
    "exported_names",
    "label_names",
    "metric_names",
    "promtool",
]

_PROCESS_PACKAGES = ("core", "server", "workers", "cache_sidecar")

PROMETHEUS_SERIES = frozenset({"up"})
"""Series Prometheus writes itself for every scrape target, not the processes."""

# The series a declaration of each type exposes, as suffixes of its name.
_SUFFIXES = {
    "Counter": ("_total",),
    "CounterMetricFamily": ("_total",),
    "Gauge": ("",),
    "GaugeMetricFamily": ("",),
    "Histogram": ("_bucket", "_count", "_sum"),
    "HistogramMetricFamily": ("_bucket", "_count", "_sum"),
    "Summary": ("_count", "_sum"),
    "SummaryMetricFamily": ("_count", "_sum"),
}

_PROMTOOL_SECONDS = 60


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """``promtool *args`` (Debian's ``prometheus`` package), to completion: exit code and output."""
    binary = shutil.which("promtool")
    assert binary, "promtool not found: run `make system-deps` (Debian package prometheus)"
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=_PROMTOOL_SECONDS, check=False
    )


def _declarations() -> Iterator[tuple[Path, str, ast.expr]]:
    """(file, metric type, name argument) of every metric declared in the process code."""
    for package in _PROCESS_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            source = path.read_text()
            if "prometheus_client" not in source:  # a Counter or Summary of its own
                continue
            for node in ast.walk(ast.parse(source, str(path))):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                func = node.func
                kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if kind in _SUFFIXES:
                    yield path, kind, node.args[0]


def exported_names() -> set[str]:
    """Every series name the process code declares (``_total``, ``_bucket``, ... included)."""
    names: set[str] = set()
    dynamic: list[str] = []
    for path, kind, argument in _declarations():
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            # prometheus_client adds `_total` to a counter's name that lacks it.
            base = argument.value.removesuffix("_total") if "Counter" in kind else argument.value
            names.update(base + suffix for suffix in _SUFFIXES[kind])
        else:
            dynamic.append(f"{path.relative_to(REPO)}: {kind}({ast.unparse(argument)}, ...)")
    # The sidecar's per-namespace counters are named by the values of its Counter enum.
    assert dynamic == ["cache_sidecar/_metrics.py: CounterMetricFamily(counter.value, ...)"], (
        f"metric names this scan cannot read: {dynamic}; teach it where they come from"
    )
    names.update(counter.value + "_total" for counter in SidecarCounter)
    return names


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_PROMQL_WORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def _blank_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside braces or grouping clauses) or strings."""
    text = _blank_strings(expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    found = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text)
    return {name for name in found if name.lower() not in _PROMQL_WORDS}


def label_names(expr: str) -> set[str]:
    """Label names a PromQL expression relies on: those of its matchers (``{name=...}``,
    ``!=``, ``=~``, ``!~``) and of its ``by``, ``without``, ``on``, ``ignoring``,
    ``group_left`` and ``group_right`` clauses. ``__name__`` (the metric name) is left out."""
    text = _blank_strings(expr)
    names: set[str] = set()
    for body in re.findall(r"\{([^}]*)\}", text):
        for matcher in body.split(","):
            if m := _MATCHER.match(matcher):
                names.add(m.group(1))
    for _, clause in _GROUPING.findall(text):
        names.update(name.strip() for name in clause.split(",") if name.strip())
    names.discard("__name__")
    return names


# What Grafana puts in for its own variables, as far as the names and the syntax go: a
# duration for the interval variables, a regex matching anything for a template variable
# (dashboards write them as `label=~"$var"`).
_GRAFANA_DURATIONS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$([A-Za-z_]\w*)")


def _substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return _GRAFANA_DURATIONS.get(name, ".*")

    return _GRAFANA_VARIABLE.sub(value, expr)


def dashboard_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard document, rows included, walking the panels a row holds
    (a collapsed row keeps its panels inside it) and the old ``rows`` layout."""
    stack: list[dict[str, Any]] = []
    for row in dashboard.get("rows", []):
        stack.extend(row.get("panels", []))
    stack.extend(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        yield panel
        stack[0:0] = panel.get("panels", [])


def dashboard_expressions(path: Path) -> list[str]:
    """The ``expr`` of every target of every panel of the dashboard JSON at ``path``, in
    panel order, with Grafana's variables replaced (``$__rate_interval`` by ``1m``, a
    template variable such as ``$instance`` by ``.*``) so that each is plain PromQL."""
    dashboard = json.loads(path.read_text())
    return [
        _substitute(target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
