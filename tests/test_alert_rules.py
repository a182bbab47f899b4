"""The Prometheus alert rules are valid, unit-tested, documented, and name real metrics.

``promtool`` (Debian's ``prometheus`` package, installed by ``make system-deps``) checks
``deploy/prometheus/alerts.yml`` and runs its unit tests in ``deploy/prometheus/tests/``;
mutated copies of the rules show those unit tests catch a broken guard. The metric names of
every expression are compared with the names the code declares, found by a static scan (no
process is started; comparing with a live scrape is the dashboard check's job).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML is pinned in requirements.lock; its stubs are not

from tests._promql import (
    PROMETHEUS_SERIES,
    exported_names,
    label_names,
    metric_names,
    promtool,
)
from tests._support import REPO

RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
UNIT_TESTS = REPO / "deploy" / "prometheus" / "tests"
RUNBOOK = REPO / "docs" / "operations.md"


def _unit_test_files(directory: Path = UNIT_TESTS) -> list[str]:
    files = sorted(str(path) for path in directory.glob("*.yml"))
    assert files, f"no promtool unit tests in {directory}"
    return files


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *_unit_test_files())
    assert result.returncode == 0, result.stdout + result.stderr


# Each mutation breaks one guard the rules rely on (old text, new text, its occurrences);
# the unit tests must notice.
_MUTATIONS = {
    "hit-rate traffic guard": (") < 0.80\n          and\n", ") < 0.80\n          or\n", 1),
    "server-side codes only": (
        'grpc_code=~"UNKNOWN|INTERNAL|UNAVAILABLE|DATA_LOSS|DEADLINE_EXCEEDED"',
        'grpc_code!="OK"',
        1,
    ),
    "unary calls only": ('grpc_type="unary"', 'grpc_type=~".+"', 3),
    "latency against the 200 ms objective": ('le="0.2"}', 'le="0.25"}', 1),
    "breaker half-open counts as open": ('{state!="closed"}', '{state="open"}', 1),
    "surge against a baseline": ("> 3 * (", "> 0 * (", 1),
    "dead-letter queues need no consumer": ('{queue_name!~".+[.]dlq"}', '{queue_name=~".+"}', 3),
    "task failure traffic guard": (") > 0.05\n          and\n", ") > 0.05\n          or\n", 1),
    "queue wait traffic guard": (") > 120\n          and\n", ") > 120\n          or\n", 1),
}


def _alert_exprs(text: str) -> set[tuple[str, str]]:
    document = yaml.safe_load(text)
    return {(r["alert"], r["expr"]) for g in document["groups"] for r in g["rules"] if "alert" in r}


def _files_testing(alerts: set[str], directory: Path) -> list[str]:
    """The unit-test files with a case of one of ``alerts`` (the rest cannot notice)."""
    return [
        path
        for path in _unit_test_files(directory)
        if any(
            check["alertname"] in alerts
            for case in yaml.safe_load(Path(path).read_text())["tests"]
            for check in case.get("alert_rule_test", [])
        )
    ]


@pytest.mark.parametrize("mutation", sorted(_MUTATIONS))
def test_the_unit_tests_catch_a_broken_guard(mutation: str, tmp_path: Path) -> None:
    old, new, occurrences = _MUTATIONS[mutation]
    text = RULES.read_text()
    assert text.count(old) == occurrences, f"mutation {mutation!r} no longer matches the rules"
    broken = text.replace(old, new)
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copytree(UNIT_TESTS, tmp_path / "tests")
    # Only the files testing the alerts the mutation changed: promtool runs every case of a
    # file, and the others cannot fail on this mutation (about 1 s instead of 7 s each).
    changed = {name for name, _ in _alert_exprs(text) ^ _alert_exprs(broken)}
    files = _files_testing(changed, tmp_path / "tests")
    assert files, f"no unit test covers {sorted(changed)}, changed by {mutation!r}"
    result = promtool("test", "rules", *files)
    assert result.returncode != 0, f"the unit tests pass with {mutation!r} broken"


# The alerts the operations plan requires by name (issue #14); more may exist.
REQUIRED_ALERTS = {
    "TaskQueueBacklog",
    "NoWorkerConsuming",
    "TaskFailureRateHigh",
    "TaskQueueWaitHigh",
    "CacheHitRateLow",
    "CacheBreakerOpen",
    "OriginLoadSurge",
    "GrpcErrorRateHigh",
    "GrpcLatencyHigh",
    "OutboxBacklog",
    "PendingInvalidations",
    "BackupStale",
    "ScheduledJobFailing",
    "DependencyDown",
}


def test_every_required_alert_is_in_the_rules() -> None:
    assert REQUIRED_ALERTS - {rule["alert"] for rule in _rules()} == set()


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in _unit_test_files():
        for case in yaml.safe_load(Path(path).read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _rules()}
    assert names - fires == set(), "alerts never seen firing in a unit test"
    assert names - quiet == set(), "alerts never seen quiet in a unit test"


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (lower case, punctuation dropped)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _alert_anchors() -> set[str]:
    """Anchors of the headings under the runbook's "Alerts" section."""
    section = RUNBOOK.read_text().split("\n## Alerts\n", 1)
    assert len(section) == 2, "docs/operations.md has no '## Alerts' section"
    body = section[1].split("\n## ", 1)[0]
    return {_github_anchor(m) for m in re.findall(r"^###\s+(.+)$", body, flags=re.M)}


def test_every_alert_is_labelled_annotated_and_has_a_runbook_entry() -> None:
    anchors = _alert_anchors()
    for rule in _rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key), f"{name} lacks the {key} annotation"
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/operations.md", f"{name}: runbook_url must point into the runbook"
        assert anchor == name.lower(), f"{name}: runbook anchor {anchor!r} is not its own"
        assert anchor in anchors, f"{name}: docs/operations.md has no Alerts entry #{anchor}"
    assert anchors == {rule["alert"].lower() for rule in _rules()}, "Alerts entries without a rule"


# --- metric names (the scan lives in tests/_promql.py, shared with the dashboard) ----------


def test_the_metric_name_scan_reads_promql() -> None:
    expr = (
        'sum by (namespace) (rate(a_total{state!="x", le="0.25"}[5m] offset 1h)) > 0.8 and '
        "on (instance) max without (job) (b_seconds_bucket) unless c == bool 1"
    )
    assert metric_names(expr) == {"a_total", "b_seconds_bucket", "c"}


def test_the_label_name_scan_reads_promql() -> None:
    expr = (
        'sum by (namespace, le) (rate(a_total{state!="x,y=z", le=~"0.2"}[5m])) / ignoring(le) '
        "group_left (node) max without (job) (b{__name__=~'b', kind!~`p`}) > on () c"
    )
    assert label_names(expr) == {"namespace", "le", "state", "node", "job", "kind"}
    assert label_names("sum(rate(a_total[5m])) by (grpc_service)") == {"grpc_service"}
    assert label_names("up") == set()


def test_every_metric_in_the_rules_is_exported_by_the_code() -> None:
    exported = exported_names()
    # A few names from each part of the code, so that a scan finding nothing cannot pass.
    assert {
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "agentic_tasks",
        "agentic_cache_hits_total",
        "agentic_scheduler_fires_total",
    } <= exported
    for rule in _rules():
        used = metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in its expression"
        unknown = used - exported - PROMETHEUS_SERIES
        assert not unknown, f"{rule['alert']} uses metrics no process exports: {sorted(unknown)}"
