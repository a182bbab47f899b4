"""Backups in a local directory (``AGENTIC_BACKUP_DIR``), one sub-directory each.

A backup is written into ``.<name>.partial`` and renamed to ``<name>`` only once its
manifest is written and synced, so a backup that failed or was killed leaves a dot-name
without a manifest, which nothing takes for a backup (``prune`` removes such leftovers
once they are a day old; younger ones may still be being written). A deletion renames
the backup to ``.<name>.deleting`` first, for the same reason. ``verified.json`` beside
the manifest records the last verify that passed.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from core.backup._destination import (
    PARTIAL_MAX_AGE_SECONDS,
    VERIFIED_NAME,
    Progress,
    StoredBackup,
    parse_verified,
    verified_record,
)
from core.backup._manifest import MANIFEST_NAME, Manifest, ManifestError
from core.objects import fsync_directory

__all__ = ["BackupDirectory", "new_name"]


def new_name(now: datetime) -> str:
    """A new backup's name: its time (so names sort by time) and a random suffix."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _write_atomically(path: Path, body: str) -> None:
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    with staged.open("w") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staged, path)
    fsync_directory(path.parent)


class BackupDirectory:
    """The backups under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Absolute, for messages and ListBackups: a relative AGENTIC_BACKUP_DIR means the
        # process's working directory, which the reader of a message does not know.
        self.url = str(root.absolute())

    def begin(self, now: datetime) -> tuple[str, Path]:
        """A new backup's name and the partial directory to write it into."""
        name = new_name(now)
        partial = self.root / f".{name}.partial"
        partial.mkdir(parents=True)
        return name, partial

    def complete(
        self, partial: Path, manifest: Manifest, progress: Progress | None = None
    ) -> StoredBackup:
        """Write the manifest and give the backup its name: from here on it is whole."""
        _write_atomically(partial / MANIFEST_NAME, manifest.to_json())
        for folder, _subfolders, _names in os.walk(partial):
            fsync_directory(Path(folder))
        final = self.root / manifest.name
        os.replace(partial, final)
        fsync_directory(self.root)
        return StoredBackup(str(final.absolute()), manifest, None)

    @staticmethod
    def abandon(partial: Path) -> None:
        """Remove what a failed backup wrote."""
        shutil.rmtree(partial, ignore_errors=True)

    def backups(self) -> tuple[list[StoredBackup], list[tuple[str, str]]]:
        """The complete backups, oldest first, and (name, problem) of the directories that
        look like backups but whose manifest cannot be read."""
        found: list[StoredBackup] = []
        broken: list[tuple[str, str]] = []
        if not self.root.exists():
            return found, broken
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                found.append(self.get(entry.name))
            except ManifestError as exc:
                broken.append((entry.name, str(exc)))
        found.sort(key=lambda b: (b.manifest.create_time, b.name))
        return found, broken

    def get(self, name: str) -> StoredBackup:
        """The backup ``name``; ManifestError when there is none or it is not whole."""
        path = self.root / name
        if name.startswith(".") or "/" in name or not (path / MANIFEST_NAME).is_file():
            raise ManifestError(f"no backup {name!r} in {self.root}")
        manifest = Manifest.from_json((path / MANIFEST_NAME).read_text())
        if manifest.name != name:
            raise ManifestError(f"{name}'s manifest names {manifest.name!r}")
        marker = path / VERIFIED_NAME
        verify_time = parse_verified(marker.read_text()) if marker.is_file() else None
        return StoredBackup(str(path.absolute()), manifest, verify_time)

    @contextmanager
    def local_copy(self, backup: StoredBackup) -> Iterator[Path]:
        """The backup's own directory: it is local already."""
        yield Path(backup.location)

    def mark_verified(self, backup: StoredBackup, now: datetime) -> StoredBackup:
        """Record that ``backup`` passed verification at ``now``."""
        _write_atomically(Path(backup.location) / VERIFIED_NAME, verified_record(now))
        return StoredBackup(backup.location, backup.manifest, now)

    def clear_verified(self, backup: StoredBackup) -> None:
        """Forget a verification: the backup failed a later one."""
        (Path(backup.location) / VERIFIED_NAME).unlink(missing_ok=True)

    def delete(self, name: str) -> None:
        """Remove backup ``name``: renamed out of sight first, so an interrupted removal
        leaves no half a backup that looks whole."""
        doomed = self.root / f".{name}.deleting"
        os.replace(self.root / name, doomed)
        shutil.rmtree(doomed)

    def remove_leftovers(self, now: float | None = None) -> list[str]:
        """Remove partial backups older than PARTIAL_MAX_AGE_SECONDS and interrupted
        deletions; their names."""
        removed: list[str] = []
        if not self.root.exists():
            return removed
        cutoff = (time.time() if now is None else now) - PARTIAL_MAX_AGE_SECONDS
        for entry in sorted(self.root.iterdir()):
            stale_partial = entry.name.endswith(".partial") and entry.stat().st_mtime < cutoff
            if entry.name.startswith(".") and (stale_partial or entry.name.endswith(".deleting")):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed
