"""Where backups live, as the operations see it: a local directory or an S3 prefix.

Both hold one backup per name, complete only once its manifest is in place (written last),
and a verification record beside it (``verified.json``, written whole by ``verify``).
A backup is written into a local staging directory first (``begin``); ``complete`` makes
it a backup (renamed into place, or uploaded with the manifest last). ``local_copy`` gives
the operations a backup's files as a local directory (the backup's own directory, or a
download of it), so checking and restoring are one implementation for both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from core.backup._config import BackupConfig
from core.backup._errors import BackupError
from core.backup._manifest import Manifest

__all__ = [
    "PARTIAL_MAX_AGE_SECONDS",
    "VERIFIED_NAME",
    "Destination",
    "StoredBackup",
    "open_destination",
    "parse_verified",
    "verified_record",
]

VERIFIED_NAME = "verified.json"
PARTIAL_MAX_AGE_SECONDS = 24 * 3600
"""A partial backup this old is no backup in progress: no backup of ours takes a day."""

Progress = Callable[[str], None]
"""Called with a message as each file is written (the task kind reports it)."""


@dataclass(frozen=True, slots=True)
class StoredBackup:
    """A complete backup: where it is, its manifest and its last passed verification."""

    location: str
    """Its directory path, or its ``s3://bucket/prefix/name`` URL."""
    manifest: Manifest
    verify_time: datetime | None

    @property
    def name(self) -> str:
        return self.manifest.name


def verified_record(now: datetime) -> str:
    """The body of ``verified.json`` for a verification passed at ``now``."""
    return json.dumps({"verify_time": now.isoformat()}) + "\n"


def parse_verified(body: str) -> datetime | None:
    """The time ``verified.json`` records; None for an unreadable one (no verification)."""
    try:
        value = datetime.fromisoformat(json.loads(body)["verify_time"])
    except (ValueError, KeyError, TypeError):
        return None
    return value if value.tzinfo is not None else None


class Destination(Protocol):
    """The backups at one place."""

    url: str
    """The place, for messages and ListBackups: a directory path or an ``s3://`` URL."""

    def begin(self, now: datetime) -> tuple[str, Path]:
        """A new backup's name and the local directory to write its files into."""
        ...

    def complete(
        self, partial: Path, manifest: Manifest, progress: Progress | None = None
    ) -> StoredBackup:
        """Store the files and the manifest last: from here on the backup is whole.
        On failure nothing of it looks whole."""
        ...

    def abandon(self, partial: Path) -> None:
        """Remove what a failed backup wrote."""
        ...

    def backups(self) -> tuple[list[StoredBackup], list[tuple[str, str]]]:
        """The complete backups, oldest first, and (name, problem) of those whose
        manifest cannot be read."""
        ...

    def get(self, name: str) -> StoredBackup:
        """The backup ``name``; ManifestError when there is none or it is not whole."""
        ...

    def local_copy(self, backup: StoredBackup) -> AbstractContextManager[Path]:
        """The backup's files in a local directory, for as long as the context lasts."""
        ...

    def mark_verified(self, backup: StoredBackup, now: datetime) -> StoredBackup:
        """Record that ``backup`` passed verification at ``now``."""
        ...

    def clear_verified(self, backup: StoredBackup) -> None:
        """Forget a verification: the backup failed a later one."""
        ...

    def delete(self, name: str) -> None:
        """Remove backup ``name`` so that an interrupted removal leaves nothing that looks
        whole."""
        ...

    def remove_leftovers(self, now: float | None = None) -> list[str]:
        """Remove partial backups older than PARTIAL_MAX_AGE_SECONDS and interrupted
        deletions; their names."""
        ...


def open_destination(config: BackupConfig) -> Destination:
    """The destination ``config`` names; BackupError when it names none."""
    if config.backup_url:
        # boto3 is imported only where backups go to S3.
        from core.backup._s3 import S3Destination

        return S3Destination.from_url(config.backup_url)
    if config.backup_dir:
        from core.backup._directory import BackupDirectory

        return BackupDirectory(Path(config.backup_dir))
    raise BackupError("no backup destination: set AGENTIC_BACKUP_DIR or AGENTIC_BACKUP_URL")
