"""The backup settings: where backups go and how many are kept.

One declaration for every process that handles backups: ``python -m server.backup``
reads it with the server's database and object store (``DATABASE_URL``,
``AGENTIC_OBJECT_STORE_URL``), a worker running the ``backup`` kind with its own (the
same variables), and the API server to answer ``AdminService.ListBackups``. The README's
"Backups" table is rendered from these declarations (``make docs``).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import integer, number, setting

__all__ = ["BackupConfig"]


def _s3_url(raw: str) -> str:
    if not raw.startswith("s3://") or not raw.removeprefix("s3://").split("/", 1)[0]:
        raise ValueError("is not an s3://bucket/prefix URL")
    return raw.rstrip("/")


@dataclass(frozen=True, slots=True)
class BackupConfig:
    """Where backups are written and read, and what ``prune`` keeps."""

    backup_dir: str = setting(
        "AGENTIC_BACKUP_DIR",
        "var/backups",
        when_empty="",
        doc="directory of the backups (relative to the working directory), one "
        "sub-directory each; a backup is written under a dot-name and renamed when complete. "
        "Set but empty (and no `AGENTIC_BACKUP_URL`): no backup destination, so the backup "
        "command and kind refuse to run and `ListBackups` answers FAILED_PRECONDITION",
    )
    backup_url: str = setting(
        "AGENTIC_BACKUP_URL",
        "",
        parse=_s3_url,
        shown="(unset)",
        doc="an `s3://bucket/prefix` to keep the backups in instead of `AGENTIC_BACKUP_DIR` "
        "(endpoint, region and credentials from the usual `AWS_*` variables, like the object "
        "store's); one prefix per backup, its manifest uploaded last",
    )
    keep_last: int = setting(
        "AGENTIC_BACKUP_KEEP_LAST",
        7,
        parse=integer(minimum=1),
        doc="`prune` keeps this many of the newest backups",
    )
    keep_days: float = setting(
        "AGENTIC_BACKUP_KEEP_DAYS",
        14.0,
        parse=number(),
        doc="`prune` also keeps every backup younger than this many days; the newest verified "
        "backup is never deleted, and nothing is while the newest backup is unverified",
    )
    app_version: str = setting(
        "AGENTIC_APP_VERSION",
        "",
        shown="(unset: the checkout's `git describe --always --dirty`, else `unknown`)",
        doc="the application version each manifest records; set it where the code is no git "
        "checkout (an image)",
    )

    @property
    def destination(self) -> str:
        """The configured destination: the S3 URL, else the directory; empty for none."""
        return self.backup_url or self.backup_dir
