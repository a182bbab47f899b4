"""The five operations: create, list, verify, restore and prune, on plain values.

``create`` dumps the database, copies the objects, writes the manifest last (the backup
is renamed into place, or uploaded, only then) and verifies the result before ``prune``
may delete any older backup. Every operation works on a ``Destination`` (a directory or an
S3 prefix) and reads a backup's files through ``Destination.local_copy``. ``restore``
verifies the whole backup before it touches the target, so a corrupt backup is refused
and the target stays as it was; it refuses a target that holds rows unless forced, and
migrates a backup of an older schema up to this code's head.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from core.backup import _database, _objects
from core.backup._destination import Destination, StoredBackup
from core.backup._errors import BackupError, RestoreRefusedError
from core.backup._manifest import FileEntry, Manifest, ManifestError, sha256_file
from core.backup._retention import Candidate, Plan, plan
from core.db import make_engine, migrate
from core.objects import ObjectStore

__all__ = [
    "BackupError",
    "Phase",
    "RestoreRefusedError",
    "RestoreReport",
    "VerifyReport",
    "app_version",
    "check",
    "create",
    "find",
    "prune",
    "restore",
    "verify",
]

log = logging.getLogger(__name__)
_REPO = Path(__file__).resolve().parent.parent.parent

Phase = Callable[[float, str], None]
"""Told (fraction done, what now) as ``create`` moves on: between phases and per file
stored. The backup kind reports it as progress and checks for cancellation there (an
exception raised from it abandons the backup like any failure)."""


def _quiet(_fraction: float, _message: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify`` found: no problems means the backup is whole."""

    backup: str
    problems: tuple[str, ...]
    files_checked: int
    bytes_checked: int
    missing_remote_objects: tuple[str, ...] = ()
    """S3 keys listed by the backup that the bucket no longer holds (not the backup's
    fault: see bucket versioning)."""

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What ``restore`` did."""

    backup: str
    from_revision: str
    to_revision: str
    objects_restored: int
    seconds: float
    missing_remote_objects: tuple[str, ...] = field(default=())


def app_version(configured: str) -> str:
    """The version to record: the configured one, else the checkout's ``git describe``."""
    if configured:
        return configured
    try:
        done = subprocess.run(
            ["git", "-C", str(_REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def create(
    destination: Destination,
    database_url: str,
    store: ObjectStore,
    *,
    version: str,
    now: datetime | None = None,
    phase: Phase = _quiet,
) -> StoredBackup:
    """Make one backup and verify it; BackupError (nothing left that looks whole) when
    any step fails."""
    now = now or datetime.now(UTC)
    backend = _database.backend_of(database_url)
    name, partial = destination.begin(now)
    try:
        phase(0.05, f"dumping the {backend} database")
        dump_name, revision = _database.dump(database_url, partial)
        if not revision:
            raise BackupError("the database has no schema revision: is it migrated?")
        size, digest = sha256_file(partial / dump_name)
        files = [FileEntry(dump_name, size, digest)]
        phase(0.3, "copying the objects")
        copied = _objects.copy_objects(store, partial)
        remote: list[FileEntry] = []
        if copied is None:
            remote = _objects.list_remote(database_url)
        else:
            files.extend(copied)
        manifest = Manifest(
            name=name,
            create_time=now,
            app_version=version,
            database_backend=backend,
            alembic_revision=revision,
            database_file=dump_name,
            object_store="file" if copied is not None else "s3",
            files=tuple(files),
            remote_objects=tuple(remote),
        )
        phase(0.5, f"writing {len(files)} files to {destination.url}")
        backup = destination.complete(partial, manifest, lambda message: phase(0.5, message))
    except BaseException as exc:
        destination.abandon(partial)
        if isinstance(exc, (_database.DatabaseError, OSError)):
            raise BackupError(f"backup {name} failed: {exc}") from exc
        raise
    phase(0.7, f"verifying backup {name}")
    report = verify(destination, backup, store)
    if not report.ok:
        raise BackupError(f"backup {name} failed its verification: {'; '.join(report.problems)}")
    return destination.get(name)


def check(
    destination: Destination, backup: StoredBackup, store: ObjectStore | None = None
) -> VerifyReport:
    """Re-read every file's size and sha256 and check the dump (changes nothing)."""
    with destination.local_copy(backup) as root:
        return _check_files(backup, root, store)


def _check_files(backup: StoredBackup, root: Path, store: ObjectStore | None) -> VerifyReport:
    manifest = backup.manifest
    problems: list[str] = []
    checked = checked_bytes = 0
    for entry in manifest.files:
        path = root / entry.path
        if not path.is_file():
            problems.append(f"{entry.path} is missing")
            continue
        size, digest = sha256_file(path)
        checked += 1
        checked_bytes += size
        if size != entry.size_bytes:
            problems.append(
                f"{entry.path} holds {size} bytes, the manifest says {entry.size_bytes}"
            )
        elif digest != entry.sha256:
            problems.append(f"{entry.path} has sha256 {digest}, the manifest says {entry.sha256}")
    if not problems:
        try:
            _database.check_dump(manifest.database_backend, root / manifest.database_file)
        except _database.DatabaseError as exc:
            problems.append(str(exc))
    missing: list[str] = []
    if store is not None and manifest.remote_objects and not _objects.is_local(store):
        missing = _objects.missing_remote(store, manifest.remote_objects)
    return VerifyReport(backup.name, tuple(problems), checked, checked_bytes, tuple(missing))


def verify(
    destination: Destination, backup: StoredBackup, store: ObjectStore | None = None
) -> VerifyReport:
    """``check``, recording the outcome: a passed verification is what ``prune`` trusts."""
    report = check(destination, backup, store)
    if report.ok:
        destination.mark_verified(backup, datetime.now(UTC))
    else:
        destination.clear_verified(backup)
    return report


def restore(
    destination: Destination,
    backup: StoredBackup,
    database_url: str,
    store: ObjectStore,
    *,
    force: bool = False,
) -> RestoreReport:
    """Restore ``backup`` into the database and the object store.

    BackupError, with the target untouched, when the backup fails ``check``, comes from a
    newer schema than this code knows, or is of the other database backend;
    RestoreRefusedError when the target holds rows and ``force`` is False.
    """
    started = time.monotonic()
    # One local copy for the check and the restore: what is restored is what was checked.
    with destination.local_copy(backup) as root:
        return _restore_from(backup, root, database_url, store, force=force, started=started)


def _restore_from(
    backup: StoredBackup,
    root: Path,
    database_url: str,
    store: ObjectStore,
    *,
    force: bool,
    started: float,
) -> RestoreReport:
    manifest = backup.manifest
    report = _check_files(backup, root, None)
    if not report.ok:
        raise BackupError(f"backup {backup.name} is corrupt: {'; '.join(report.problems)}")
    if manifest.alembic_revision not in _database.known_revisions():
        raise BackupError(
            f"backup {backup.name} has schema revision {manifest.alembic_revision}, which this "
            "code does not know (a backup of newer code): restore it with that version"
        )
    backend = _database.backend_of(database_url)
    if backend != manifest.database_backend:
        raise BackupError(f"backup {backup.name} is of {manifest.database_backend}, not {backend}")
    if manifest.object_store == "file" and not _objects.is_local(store):
        raise BackupError(
            f"backup {backup.name} holds file-store objects; the target is {store.url}"
        )
    if not force and not _database.is_empty(database_url):
        raise RestoreRefusedError(
            "the target database holds rows: restore into an empty database, or pass --force "
            "to replace them"
        )
    _database.restore(database_url, manifest.database_backend, root / manifest.database_file)
    engine = make_engine(database_url, pool_size=1)
    try:
        migrate(engine)  # a backup of an older schema is brought to this code's head
        revision = _database.current_revision(engine)
    finally:
        engine.dispose()
    restored = 0
    missing: list[str] = []
    if manifest.object_store == "file":
        restored = _objects.put_back(store, root, manifest.object_files)
    else:
        missing = _objects.missing_remote(store, manifest.remote_objects)
    return RestoreReport(
        backup=backup.name,
        from_revision=manifest.alembic_revision,
        to_revision=revision,
        objects_restored=restored,
        seconds=time.monotonic() - started,
        missing_remote_objects=tuple(missing),
    )


def prune(
    destination: Destination, *, keep_last: int, keep_days: float, now: datetime | None = None
) -> tuple[Plan, list[str]]:
    """Delete the backups the retention rules let go: the plan, and leftovers of failed
    backups removed."""
    now = now or datetime.now(UTC)
    backups, _broken = destination.backups()
    decided = plan(
        [Candidate(b.name, b.manifest.create_time, b.verify_time is not None) for b in backups],
        keep_last=keep_last,
        keep_days=keep_days,
        now=now,
    )
    for name in decided.delete:
        destination.delete(name)
    return decided, destination.remove_leftovers(now.timestamp())


def find(destination: Destination, name: str | None) -> StoredBackup:
    """Backup ``name``, or the newest one when ``name`` is None; BackupError when none."""
    if name is not None:
        try:
            return destination.get(name)
        except ManifestError as exc:
            raise BackupError(str(exc)) from None
    backups, _broken = destination.backups()
    if not backups:
        raise BackupError(f"no backups in {destination.url}")
    return backups[-1]
