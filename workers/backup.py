"""The backup kind: one backup of the database and the object store, verified, then prune.

The engine is ``core.backup``, the same as ``python -m server.backup create [--prune]``:
the backup is written to a staging place and made whole (renamed, or its manifest
uploaded) only at the end, then verified (every checksum re-read, the dump checked), and
only a verified backup lets ``prune`` delete older ones. Progress is reported at each
phase and for each file stored, and cancellation is checked there: a cancelled or failed
run abandons its backup, so nothing it leaves looks whole. Destination and retention are
the worker's ``AGENTIC_BACKUP_*`` settings (the command's variables).
"""

from __future__ import annotations

import time

from agentic.tasks.v1 import maintenance_pb2
from google.protobuf import duration_pb2, timestamp_pb2

import core.backup as backups
from workers._context import PermanentError, TaskContext, TransientError


def run_backup(
    spec: maintenance_pb2.BackupSpec, context: TaskContext
) -> maintenance_pb2.BackupResult:
    """Create and verify a backup, then prune when ``spec.prune``; FAILED
    (``NO_BACKUP_DESTINATION``) without a destination, retried when a step fails."""
    begin = time.monotonic()
    config = context.work.backup
    if not config.destination:
        raise PermanentError(
            "this worker has no backup destination: set AGENTIC_BACKUP_DIR or AGENTIC_BACKUP_URL",
            reason="NO_BACKUP_DESTINATION",
        )

    def phase(fraction: float, message: str) -> None:
        context.raise_if_cancelled()
        context.report_progress(fraction, message)

    database_url = context.database.url.render_as_string(hide_password=False)
    try:
        destination = backups.open_destination(config)
        backup = backups.create(
            destination,
            database_url,
            context.objects,
            version=backups.app_version(config.app_version),
            phase=phase,
        )
        pruned: tuple[str, ...] = ()
        if spec.prune:
            # create returned, so the new backup verified: only now may older ones go.
            phase(0.9, "pruning")
            plan, _leftovers = backups.prune(
                destination, keep_last=config.keep_last, keep_days=config.keep_days
            )
            pruned = plan.delete
    except (backups.BackupError, backups.DatabaseError, OSError) as exc:
        # The database, pg_dump or the destination failed (a retry starts a new backup;
        # this one left nothing that looks whole).
        raise TransientError(str(exc)) from exc
    manifest = backup.manifest
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(manifest.create_time)
    elapsed = duration_pb2.Duration()
    elapsed.FromNanoseconds(int((time.monotonic() - begin) * 1e9))
    context.report_progress(1.0, f"backup {backup.name} verified")
    return maintenance_pb2.BackupResult(
        backup_id=backup.name,
        create_time=created,
        location=backup.location,
        alembic_revision=manifest.alembic_revision,
        app_version=manifest.app_version,
        files=len(manifest.files),
        bytes=manifest.size_bytes,
        verified=backup.verify_time is not None,
        pruned_backup_ids=pruned,
        duration=elapsed,
    )
