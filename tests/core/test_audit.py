"""``core.audit.AuditWriter`` on a real SQLite database: rows as written, failures swallowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from core.audit import MAX_REQUEST_CHARS, AuditWriter
from core.db import AuditEventRow, make_engine, migrate


def test_a_job_run_is_one_row_with_its_summary(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}", pool_size=1)
    migrate(engine)
    writer = AuditWriter(engine)
    writer.record_job_run(
        subject="beat/a", job="health_probe", summary={"request_id": "r", "b": 1}, outcome="OK"
    )
    writer.record(subject="alice", action="PurgeTasks", request_json="x" * 10_000, outcome="OK")
    with engine.connect() as conn:
        rows = conn.execute(select(AuditEventRow).order_by(AuditEventRow.create_time)).all()
    assert [(r.subject, r.action, r.outcome) for r in rows] == [
        ("beat/a", "job:health_probe", "OK"),
        ("alice", "PurgeTasks", "OK"),
    ]
    assert json.loads(rows[0].request_json) == {"b": 1, "request_id": "r"}
    assert len(rows[1].request_json) == MAX_REQUEST_CHARS
    engine.dispose()


def test_a_failed_write_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}", pool_size=1)  # no tables
    AuditWriter(engine).record(subject="s", action="a", request_json="{}", outcome="OK")
    assert "could not record the audit event s a OK" in caplog.text
    engine.dispose()
