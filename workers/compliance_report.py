"""TASK_KIND_COMPLIANCE_REPORT: a project checked against an ASPICE rule set.

The steps, each ended by a cancellation check and a progress report:

1. the rule set (empty id: ``aspice-3.1``), read through the cache sidecar
   (``workers._rule_sets``); none with that id fails the task ``RULE_SET_NOT_FOUND``;
2. the work products the project's READY documents provide (their ``work_products``
   tags; ``workers._compliance_inputs``);
3. the traceability export, when the spec names one, read with DuckDB and checked row by
   row (bad data fails the task ``TRACEABILITY_INVALID`` naming the column or row);
4. the judgement per process (``workers._compliance_checks``), progress per process;
5. the report as HTML and PDF (``workers._compliance_render``), stored as the task's
   outputs ``report-html`` and ``report-pdf``: DOCUMENT artifacts of the project whose ids
   depend only on the task, so a retried attempt stores the same two again.

Everything the result and the reports hold derives from the spec, the rule set, the
documents, the export and the task's create time, so a re-run on the same inputs gives
the same findings and the same bytes.

The kind reads the project's documents from the worker's database
(``TaskContext.database``) and the rule set through the cache sidecar
(``TaskContext.rule_sets``), both built with the process's runtime, after the fork.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from agentic.tasks.v1 import compliance_report_pb2
from google.rpc import code_pb2

from core.compliance import ASPICE_3_1
from core.db import utc
from workers._compliance_checks import judge
from workers._compliance_inputs import dataset, documents, read_traceability
from workers._compliance_render import ReportHeader, render_html, write_pdf
from workers._context import PermanentError, TaskContext
from workers._outputs import Output

__all__ = ["run_compliance_report"]


def run_compliance_report(
    spec: compliance_report_pb2.ComplianceReportSpec, context: TaskContext
) -> compliance_report_pb2.ComplianceReportResult:
    """Check the task's project against the spec's rule set; store the HTML and PDF report."""
    record = context.record
    if record is None or not record.project_id:
        raise PermanentError(
            "a compliance report checks a project: submit it with project_id",
            reason="NO_PROJECT",
        )
    project_id = record.project_id
    rule_set_id = spec.rule_set_id or ASPICE_3_1

    context.report_progress(0.02, f"reading rule set {rule_set_id}")
    rule_set = context.rule_sets.get(rule_set_id)
    if rule_set is None:
        raise PermanentError(
            f"there is no rule set {rule_set_id!r} (ListRuleSets shows the ones there are)",
            reason="RULE_SET_NOT_FOUND",
            metadata={"rule_set_id": rule_set_id},
            code=code_pb2.NOT_FOUND,
        )
    context.raise_if_cancelled()

    context.report_progress(0.05, "reading the project's documents")
    provided = documents(context.database, project_id)
    context.raise_if_cancelled()

    outcome = None
    traceability_name = ""
    if spec.traceability.artifact_id:
        export = dataset(context.database, project_id, spec.traceability)
        traceability_name = export.name
        trace = read_traceability(context, spec.traceability, export.fmt, span=(0.1, 0.6))
        context.raise_if_cancelled()
        context.report_progress(0.62, f"judging {len(trace):,} traceability items")
        outcome = trace.outcome()

    total = len(rule_set.processes)

    def checked(done: int, process_id: str) -> None:
        context.raise_if_cancelled()
        context.report_progress(
            0.65 + 0.2 * done / max(total, 1), f"checked {process_id} ({done} of {total})"
        )

    result = judge(rule_set, provided, outcome, on_process=checked)

    header = ReportHeader(
        project_id=project_id,
        task_id=context.task_id,
        created=utc(record.create_time),
        traceability_name=traceability_name,
    )
    document = render_html(header, rule_set, result, provided)
    base = f"compliance-report-{rule_set.id}"
    with tempfile.TemporaryDirectory(
        prefix="agentic-compliance-", dir=context.work.directory or None
    ) as scratch:
        html_path = Path(scratch) / "report.html"
        html_path.write_text(document, encoding="utf-8")
        context.report_progress(0.88, "storing the HTML report")
        result.html_artifact_id = context.store_output(
            Output(
                slot="report-html", name=f"{base}.html", kind="document", content_type="text/html"
            ),
            html_path,
        )
        context.raise_if_cancelled()
        context.report_progress(0.9, "rendering the PDF report")
        pdf_path = Path(scratch) / "report.pdf"
        write_pdf(document, pdf_path, created=header.created)
        context.raise_if_cancelled()
        context.report_progress(0.97, "storing the PDF report")
        result.pdf_artifact_id = context.store_output(
            Output(
                slot="report-pdf",
                name=f"{base}.pdf",
                kind="document",
                content_type="application/pdf",
            ),
            pdf_path,
        )
    return result
