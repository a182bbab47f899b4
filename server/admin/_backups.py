"""AdminService.ListBackups: the backups in the configured destination, as their manifests
and verification records describe them.

The server reads the destination the backup command and the backup kind write
(``AGENTIC_BACKUP_DIR`` or ``AGENTIC_BACKUP_URL``, ``core.backup.BackupConfig``); it never
writes there. Only complete backups are listed: one being written has no manifest yet,
and one whose manifest cannot be read is no backup anyone could restore (``python -m
server.backup list`` names those).
"""

from __future__ import annotations

from datetime import datetime

from agentic.admin.v1 import admin_pb2
from google.protobuf import timestamp_pb2

from core.backup import BackupConfig, BackupError, StoredBackup, open_destination
from core.rpc import FailedPrecondition, Unavailable

__all__ = ["list_backups"]

DOMAIN = "agentic.admin.v1"


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _backup(stored: StoredBackup) -> admin_pb2.Backup:
    manifest = stored.manifest
    backup = admin_pb2.Backup(
        id=stored.name,
        create_time=_timestamp(manifest.create_time),
        database=manifest.database_backend,
        alembic_revision=manifest.alembic_revision,
        app_version=manifest.app_version,
        files=len(manifest.files),
        bytes=manifest.size_bytes,
        verified=stored.verify_time is not None,
    )
    if stored.verify_time is not None:
        backup.verify_time.CopyFrom(_timestamp(stored.verify_time))
    return backup


def list_backups(config: BackupConfig | None) -> admin_pb2.ListBackupsResponse:
    """Every complete backup, newest first (blocking: run it in a thread).

    FAILED_PRECONDITION when no destination is configured; UNAVAILABLE when the
    destination cannot be read (an S3 endpoint that does not answer).
    """
    if config is None or not config.destination:
        raise FailedPrecondition(
            "this server has no backup destination: set AGENTIC_BACKUP_DIR or "
            "AGENTIC_BACKUP_URL to the one the backups are written to",
            reason="NO_BACKUP_DESTINATION",
            domain=DOMAIN,
        )
    destination = open_destination(config)
    try:
        found, _unreadable = destination.backups()
    except (BackupError, OSError) as exc:
        raise Unavailable(
            f"the backup destination {destination.url} cannot be read ({exc}); try again",
            reason="BACKUP_DESTINATION_UNAVAILABLE",
            domain=DOMAIN,
        ) from None
    return admin_pb2.ListBackupsResponse(
        backups=[_backup(b) for b in reversed(found)], destination=destination.url
    )
