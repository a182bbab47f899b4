"""The Grafana dashboard is provisioned, complete, valid PromQL, and names real metrics.

Static checks of ``deploy/grafana/dashboards/agentic-backend.json``: its uid and datasource
are those of the provisioning files, each row shows what it is for, every panel queries
something, promtool parses every expression, every metric name is one the code declares
(the scan of ``tests/_promql.py``, shared with the alert rules), and the threshold lines
are the alert rules' thresholds. No process is started; comparing with a live scrape is
the live check's job.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML is pinned in requirements.lock; its stubs are not

from tests._promql import (
    PROMETHEUS_SERIES,
    dashboard_expressions,
    dashboard_panels,
    exported_names,
    label_names,
    metric_names,
    promtool,
)
from tests._support import REPO

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "agentic-backend.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "agentic-backend.yml"
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"

# What each row must show, as the metrics its panels query (the list).
ROWS = {
    "API": {"grpc_server_handled_total", "grpc_server_handling_seconds_bucket"},
    "Cache": {
        "agentic_cache_hits_total",
        "agentic_cache_misses_total",
        "agentic_cache_lease_grants_total",
        "agentic_cache_lease_waits_total",
        "agentic_cache_lease_wait_timeouts_total",
        "agentic_cache_fills_stored_total",
        "agentic_cache_stale_set_rejections_total",
        "agentic_cache_breaker_state",
        "agentic_origin_loads_total",
        "agentic_cache_invalidations_total",
        "agentic_memcached_evictions_total",
        "agentic_memcached_bytes",
    },
    "Tasks": {
        "celery_queue_length",
        "celery_active_consumer_count",
        "agentic_task_oldest_pending_seconds",
        "agentic_task_queue_wait_seconds_bucket",
        "celery_task_runtime_seconds_bucket",
        "celery_task_started_total",
        "celery_task_succeeded_total",
        "celery_task_failed_total",
        "celery_task_retried_total",
        "agentic_task_dead_lettered_total",
        "agentic_task_outbox_rows",
    },
    "Scheduled jobs and backups": {
        "agentic_job_last_success_timestamp_seconds",
        "agentic_job_last_failure_timestamp_seconds",
        "agentic_backup_last_success_timestamp_seconds",
        "agentic_scheduler_leader",
        "agentic_scheduler_fires_total",
    },
    "Dependencies": {"up", "agentic_dependency_up", "agentic_memcached_up"},
}


def _dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def _panels() -> list[dict[str, Any]]:
    """The dashboard's panels, rows left out."""
    return [panel for panel in dashboard_panels(_dashboard()) if panel.get("type") != "row"]


def _rows(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> its panels: those nested in it (collapsed) or following it (open)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            assert panel["title"] not in rows, f"two rows titled {panel['title']!r}"
            current = rows[panel["title"]] = list(panel.get("panels", []))
        else:
            assert current is not None, f"panel {panel.get('title')!r} comes before any row"
            current.append(panel)
    return rows


def test_the_dashboard_is_the_provisioned_one_on_the_provisioned_datasource() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "agentic-backend"
    assert dashboard["title"] == "agentic-backend"
    assert 36 <= dashboard["schemaVersion"] <= 41, "a schema Grafana 10 and 11 load as is"
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    expected = {"type": "prometheus", "uid": datasource["uid"]}
    for panel in _panels():
        assert panel.get("datasource") == expected, f"{panel['title']}: another datasource"
        for target in panel["targets"]:
            assert target.get("datasource", expected) == expected, f"{panel['title']}: target"
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file", "the dashboard is provisioned from its file"


def test_each_row_shows_what_it_is_for() -> None:
    rows = _rows(_dashboard())
    assert set(rows) == set(ROWS), "rows missing or unexpected"
    for title, panels in rows.items():
        used = {
            name for panel in panels for t in panel["targets"] for name in metric_names(t["expr"])
        }
        missing = ROWS[title] - used
        assert not missing, f"row {title!r} shows none of {sorted(missing)}"


def test_every_panel_has_a_title_a_description_and_a_query() -> None:
    panels = _panels()
    assert len(panels) >= 20
    ids = [panel["id"] for panel in dashboard_panels(_dashboard())]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        title = panel.get("title")
        assert title, f"panel {panel.get('id')} has no title"
        assert panel.get("description"), f"{title}: no description"
        targets = panel.get("targets") or []
        assert targets, f"{title}: no target"
        for target in targets:
            assert target.get("expr", "").strip(), f"{title}: a target without expr"
        ref_ids = [target.get("refId") for target in targets]
        assert len(ref_ids) == len(set(ref_ids)), f"{title}: refIds repeat"


def test_every_metric_of_the_dashboard_is_exported_by_the_code() -> None:
    exported = exported_names()
    expressions = dashboard_expressions(DASHBOARD)
    assert len(expressions) >= len(_panels())
    for expr in expressions:
        assert "$" not in expr, f"a Grafana variable left in {expr!r}"
        used = metric_names(expr)
        assert used, f"no metric found in {expr!r}"
        unknown = used - exported - PROMETHEUS_SERIES
        assert not unknown, f"{expr!r} uses metrics no process exports: {sorted(unknown)}"


def test_promtool_parses_every_expression(tmp_path: Path) -> None:
    # As recording rules, so that `promtool check rules` parses each one.
    rules = [
        {"record": f"dashboard:expression_{i}", "expr": expr}
        for i, expr in enumerate(dashboard_expressions(DASHBOARD))
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def _alert_expr(name: str) -> str:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                return str(rule["expr"])
    raise AssertionError(f"no alert {name} in {RULES}")


def _panel(title: str) -> dict[str, Any]:
    (panel,) = [panel for panel in _panels() if panel["title"] == title]
    return panel


_CODES = re.compile(r'grpc_code=~"([^"]+)"')


def test_the_error_ratio_counts_the_codes_of_the_alert() -> None:
    (alert_codes,) = set(_CODES.findall(_alert_expr("GrpcErrorRateHigh")))
    panel = _panel("Server-error ratio per service")
    panel_codes = {codes for t in panel["targets"] for codes in _CODES.findall(t["expr"])}
    assert panel_codes == {alert_codes}


# Panel, the alert whose threshold its line draws, and where the alert's expression says it.
_THRESHOLDS = [
    ("Server-error ratio per service", "GrpcErrorRateHigh", r"\)\s*> ([0-9.]+)\n"),
    ("Unary calls slower than 200 ms", "GrpcLatencyHigh", r"\)\s*> ([0-9.]+)\n"),
    ("p99 latency per method", "GrpcLatencyHigh", r'le="([0-9.]+)"'),
    ("Hit ratio per namespace", "CacheHitRateLow", r"\)\s*< ([0-9.]+)\n"),
    ("Oldest pending task", "TaskQueueBacklog", r"> ([0-9.]+)$"),
    ("Queue wait p50 / p95 per kind", "TaskQueueWaitHigh", r"\)\s*> ([0-9.]+)\n"),
    ("Failure ratio per kind", "TaskFailureRateHigh", r"\)\s*> ([0-9.]+)\n"),
    ("Backup age", "BackupStale", r"> ([0-9.]+ \* [0-9.]+)$"),
]


@pytest.mark.parametrize(("title", "alert", "pattern"), _THRESHOLDS)
def test_threshold_lines_are_the_alerts_thresholds(title: str, alert: str, pattern: str) -> None:
    found = re.search(pattern, _alert_expr(alert).strip(), flags=re.M)
    assert found, f"{alert}: its threshold is no longer written as {pattern!r}"
    threshold = math.prod(float(factor) for factor in found.group(1).split("*"))
    defaults = _panel(title)["fieldConfig"]["defaults"]
    steps = [step["value"] for step in defaults["thresholds"]["steps"]]
    assert threshold in steps, f"{title}: no threshold at {alert}'s {threshold}"
    assert defaults["custom"]["thresholdsStyle"]["mode"] in {"line", "line+area", "dashed"}


def test_the_expression_walk_reads_nested_rows_and_replaces_variables(tmp_path: Path) -> None:
    document = {
        "panels": [
            {"type": "row", "title": "open", "panels": []},
            {"type": "timeseries", "targets": [{"expr": "rate(a_total[$__rate_interval])"}]},
            {
                "type": "row",
                "title": "collapsed",
                "collapsed": True,
                "panels": [
                    {"type": "stat", "targets": [{"expr": 'b{instance=~"$instance"}'}, {}]},
                    {"type": "text"},
                ],
            },
        ]
    }
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps(document))
    assert dashboard_expressions(path) == ["rate(a_total[1m])", 'b{instance=~".*"}']
    assert [p.get("title") for p in dashboard_panels(document)] == [
        "open",
        None,
        "collapsed",
        None,
        None,
    ]
    assert label_names(dashboard_expressions(path)[1]) == {"instance"}
