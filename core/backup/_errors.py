"""The backup errors::

BackupError                 a backup could not be made, read or restored
└── RestoreRefusedError     the target database holds rows and the restore was not forced
"""

from __future__ import annotations

__all__ = ["BackupError", "RestoreRefusedError"]


class BackupError(Exception):
    """A backup could not be made, read or restored; the message says why."""


class RestoreRefusedError(BackupError):
    """The target database holds rows and the restore was not forced."""
