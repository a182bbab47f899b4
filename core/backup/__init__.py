"""Backups of the database and the object store, and their restore: the one engine behind
``python -m server.backup`` and the ``backup`` task kind (the runbook is in
docs/operations.md). A backup lives in a ``Destination``: a local directory or an S3
prefix (``open_destination``)."""

from core.backup._backup import (
    Phase,
    RestoreReport,
    VerifyReport,
    app_version,
    check,
    create,
    find,
    prune,
    restore,
    verify,
)
from core.backup._config import BackupConfig
from core.backup._database import DatabaseError
from core.backup._destination import Destination, StoredBackup, open_destination
from core.backup._directory import BackupDirectory
from core.backup._errors import BackupError, RestoreRefusedError
from core.backup._manifest import FileEntry, Manifest, ManifestError
from core.backup._retention import Candidate, Plan, plan

__all__ = [
    "BackupConfig",
    "BackupDirectory",
    "BackupError",
    "Candidate",
    "DatabaseError",
    "Destination",
    "FileEntry",
    "Manifest",
    "ManifestError",
    "Phase",
    "Plan",
    "RestoreRefusedError",
    "RestoreReport",
    "StoredBackup",
    "VerifyReport",
    "app_version",
    "check",
    "create",
    "find",
    "open_destination",
    "plan",
    "prune",
    "restore",
    "verify",
]
