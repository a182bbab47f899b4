"""Backups of the database and the object store, and their restore (``python -m
server.backup``; the runbook is in docs/operations.md)."""

from server.backup._backup import (
    BackupError,
    RestoreRefusedError,
    RestoreReport,
    VerifyReport,
    check,
    create,
    find,
    prune,
    restore,
    verify,
)
from server.backup._config import BackupConfig
from server.backup._manifest import FileEntry, Manifest, ManifestError
from server.backup._retention import Candidate, Plan, plan
from server.backup._store import BackupDirectory, StoredBackup

__all__ = [
    "BackupConfig",
    "BackupDirectory",
    "BackupError",
    "Candidate",
    "FileEntry",
    "Manifest",
    "ManifestError",
    "Plan",
    "RestoreRefusedError",
    "RestoreReport",
    "StoredBackup",
    "VerifyReport",
    "check",
    "create",
    "find",
    "plan",
    "prune",
    "restore",
    "verify",
]
