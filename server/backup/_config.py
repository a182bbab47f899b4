"""The backup command's own settings: where backups go and how many are kept.

The database and the object store are the server's (``DATABASE_URL``,
``AGENTIC_OBJECT_STORE_URL``, read through ``server._config.ServerConfig``), so a backup
always covers what the server serves. The README's "Backups" table is rendered from these
declarations (``make docs``).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import integer, number, setting

__all__ = ["BackupConfig"]


@dataclass(frozen=True, slots=True)
class BackupConfig:
    """Everything ``python -m server.backup`` reads from its environment besides the
    server's database and object store."""

    backup_dir: str = setting(
        "AGENTIC_BACKUP_DIR",
        "var/backups",
        doc="directory of the backups (relative to the working directory), one "
        "sub-directory each; a backup is written under a dot-name and renamed when complete",
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
