"""The compliance report as people read it: one self-contained HTML page, and the same as PDF.

The HTML has no external references (inline CSS, no scripts, no images) and every value
from the rule set, the documents or the export is escaped, so a document named
``<script>`` is text. The PDF is WeasyPrint's rendering of that same page (HTML and CSS to
PDF through Pango, no browser). Both are deterministic: the only time in them is the
task's create time, and WeasyPrint is given fixed metadata (no creation or modification
date of its own), so a re-run of the same task writes the same bytes.
"""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agentic.compliance.v1 import rule_sets_pb2
from agentic.tasks.v1 import compliance_report_pb2 as pb

__all__ = ["ReportHeader", "render_html", "write_pdf"]

_EPOCH = "SOURCE_DATE_EPOCH"
_lock = threading.Lock()
_STATUS = {
    pb.PROCESS_STATUS_COMPLIANT: ("compliant", "Compliant"),
    pb.PROCESS_STATUS_PARTIAL: ("partial", "Partial"),
    pb.PROCESS_STATUS_MISSING: ("missing", "Missing"),
}
_SEVERITY = {
    pb.SEVERITY_INFO: "info",
    pb.SEVERITY_WARNING: "warning",
    pb.SEVERITY_ERROR: "error",
}
_CSS = """
@page { size: A4; margin: 16mm 14mm; }
body { font-family: "DejaVu Sans", sans-serif; font-size: 9.5pt; color: #1d2329; }
h1 { font-size: 17pt; margin: 0 0 4pt; }
h2 { font-size: 12.5pt; margin: 16pt 0 4pt; border-bottom: 1px solid #c9d1d9; }
h3 { font-size: 10.5pt; margin: 10pt 0 3pt; }
table { border-collapse: collapse; width: 100%; margin: 4pt 0 8pt; }
th, td { border: 1px solid #d0d7de; padding: 2pt 4pt; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
td.n { text-align: right; }
.meta td { border: none; padding: 1pt 6pt 1pt 0; }
.badge { padding: 0 4pt; border-radius: 3pt; font-weight: bold; }
.compliant { background: #d8f3dc; } .partial { background: #fff3bf; }
.missing, .error { background: #ffd6d6; } .warning { background: #fff3bf; }
.info { background: #e7f0fa; }
.items { font-family: "DejaVu Sans Mono", monospace; font-size: 8pt; }
section.process { break-inside: avoid-page; }
"""


@dataclass(frozen=True, slots=True)
class ReportHeader:
    """What the report says about itself beyond the result."""

    project_id: str
    task_id: str
    created: datetime
    """The task's create time: the one time in the report (re-runs keep it)."""
    traceability_name: str = ""
    """The traceability export's artifact name; empty without one."""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_html(
    header: ReportHeader,
    rule_set: rule_sets_pb2.RuleSet,
    result: pb.ComplianceReportResult,
    provided: Mapping[str, Sequence[str]],
) -> str:
    """The whole report as one HTML document (a str)."""
    names = {p.id: {w.id: w.name for w in p.work_products} for p in rule_set.processes}
    totals = result.totals
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Compliance report: {_e(rule_set.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Compliance report: {_e(rule_set.name)}</h1>",
        '<table class="meta">',
        f"<tr><td>Project</td><td>{_e(header.project_id)}</td></tr>",
        f"<tr><td>Rule set</td><td>{_e(rule_set.id)}, version {_e(rule_set.version)}</td></tr>",
    ]
    if rule_set.source:
        out.append(f"<tr><td>Source</td><td>{_e(rule_set.source)}</td></tr>")
    out += [
        "<tr><td>Traceability export</td>"
        f"<td>{_e(header.traceability_name) if header.traceability_name else 'none'}</td></tr>",
        f"<tr><td>Task</td><td>{_e(header.task_id)}</td></tr>",
        f"<tr><td>Requested</td><td>{_e(header.created.strftime('%Y-%m-%d %H:%M:%S UTC'))}"
        "</td></tr>",
        "</table>",
        "<h2>Summary</h2>",
        "<table><tr><th>Processes</th><th>Compliant</th><th>Partial</th><th>Missing</th>"
        "<th>Work products provided</th><th>Errors</th><th>Warnings</th>"
        "<th>Traceability items</th></tr>",
        f'<tr><td class="n">{totals.processes}</td><td class="n">{totals.compliant}</td>'
        f'<td class="n">{totals.partial}</td><td class="n">{totals.missing}</td>'
        f'<td class="n">{totals.provided_work_products} of {totals.expected_work_products}</td>'
        f'<td class="n">{totals.errors}</td><td class="n">{totals.warnings}</td>'
        f'<td class="n">{totals.traceability_items}</td></tr></table>',
        "<table><tr><th>Process</th><th>Name</th><th>Status</th><th>Provided</th>"
        "<th>Missing</th><th>Findings</th></tr>",
    ]
    for outcome in result.processes:
        css, label = _STATUS.get(outcome.status, ("", "?"))
        out.append(
            f"<tr><td>{_e(outcome.process_id)}</td><td>{_e(outcome.name)}</td>"
            f'<td><span class="badge {css}">{label}</span></td>'
            f'<td class="n">{len(outcome.provided_work_products)}</td>'
            f'<td class="n">{len(outcome.missing_work_products)}</td>'
            f'<td class="n">{len(outcome.findings)}</td></tr>'
        )
    out.append("</table>")
    if result.coverage:
        out.append(
            "<h2>Traceability coverage</h2><table><tr><th>Level</th><th>Items</th>"
            "<th>Covered</th><th>Ratio</th></tr>"
        )
        for level in result.coverage:
            out.append(
                f'<tr><td>{_e(level.level)}</td><td class="n">{level.items}</td>'
                f'<td class="n">{level.covered}</td><td class="n">{level.ratio:.1%}</td></tr>'
            )
        out.append("</table>")
    out.append("<h2>Processes</h2>")
    for outcome in result.processes:
        css, label = _STATUS.get(outcome.status, ("", "?"))
        wp_names = names.get(outcome.process_id, {})
        out += [
            '<section class="process">',
            f"<h3>{_e(outcome.process_id)} {_e(outcome.name)} "
            f'<span class="badge {css}">{label}</span></h3>',
        ]
        rows = [
            (wp, wp_names.get(wp, ""), "provided", ", ".join(provided.get(wp, ())))
            for wp in outcome.provided_work_products
        ] + [(wp, wp_names.get(wp, ""), "missing", "") for wp in outcome.missing_work_products]
        if rows:
            out.append(
                "<table><tr><th>Work product</th><th>Name</th><th>State</th><th>Documents</th></tr>"
            )
            for wp, name, state, documents in sorted(rows):
                badge = "compliant" if state == "provided" else "missing"
                out.append(
                    f"<tr><td>{_e(wp)}</td><td>{_e(name)}</td>"
                    f'<td><span class="badge {badge}">{state}</span></td>'
                    f"<td>{_e(documents)}</td></tr>"
                )
            out.append("</table>")
        if outcome.findings:
            out.append(
                "<table><tr><th>Severity</th><th>Rule</th><th>Finding</th><th>Items</th></tr>"
            )
            for finding in outcome.findings:
                severity = _SEVERITY.get(finding.severity, "")
                out.append(
                    f'<tr><td><span class="badge {severity}">{severity}</span></td>'
                    f"<td>{_e(finding.rule)}</td><td>{_e(finding.message)}</td>"
                    f'<td class="items">{_e(", ".join(finding.item_ids))}</td></tr>'
                )
            out.append("</table>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_pdf(document: str, path: Path, *, created: datetime) -> None:
    """Render the HTML ``document`` to a PDF at ``path``: the same bytes for the same
    ``document`` and ``created`` (the task's create time)."""
    # Imported on first use: WeasyPrint loads Pango through cffi, which a worker that never
    # renders a report need not pay for (nor need the libraries to start).
    import weasyprint  # type: ignore[import-untyped]  # WeasyPrint ships no type information

    rendered = weasyprint.HTML(string=document).render()
    # WeasyPrint takes the PDF's dates only from the HTML's <meta> (there are none); these
    # stay empty even should a version start adding its own.
    rendered.metadata.created = None
    rendered.metadata.modified = None
    # Fonts are subset by HarfBuzz (libharfbuzz-subset0, see the Makefile), which keeps
    # them as they are; without it WeasyPrint falls back to fontTools, which stamps each
    # subset's `head.modified` with the current time (two runs a second apart differed in
    # those bytes) unless SOURCE_DATE_EPOCH (reproducible-builds.org) names the time.
    with _lock:
        before = os.environ.get(_EPOCH)
        os.environ[_EPOCH] = str(int(created.timestamp()))
        try:
            rendered.write_pdf(path)
        finally:
            if before is None:
                del os.environ[_EPOCH]
            else:
                os.environ[_EPOCH] = before
