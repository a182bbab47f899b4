"""Artifact rows' lifecycle below the API server: the states and the steps that end a
row (shared with ``server.artifacts``), the expiry sweep of unfinished uploads and
interrupted deletions, and the removal of artifacts whose project was deleted. The
workers' retention kind and ``python -m server.artifacts expire`` run the same code.

- ``sweep(engine, objects)``: expire overdue uploads, finish interrupted deletions.
- ``delete_orphans(engine, objects)``: remove the artifacts of deleted projects.
"""

from core.artifacts._expiry import EXPIRED_REASON, SweepReport, sweep
from core.artifacts._lifecycle import (
    DELETING,
    FAILED,
    READY,
    UPLOADING,
    deleting_values,
    fail_upload,
    lease_free,
    remove_bytes,
    remove_rows,
    update_rows,
    upload_ended,
)
from core.artifacts._orphans import OrphanReport, delete_orphans

__all__ = [
    "DELETING",
    "EXPIRED_REASON",
    "FAILED",
    "READY",
    "UPLOADING",
    "OrphanReport",
    "SweepReport",
    "delete_orphans",
    "deleting_values",
    "fail_upload",
    "lease_free",
    "remove_bytes",
    "remove_rows",
    "sweep",
    "update_rows",
    "upload_ended",
]
