"""The expiry sweep as the server's command runs it: ``core.artifacts.sweep`` (shared
with the workers' retention kind) on the database and object store of the server's
configuration.

An upload not finished ``upload_expire_seconds`` after CreateUpload turns FAILED and its
bytes are removed; a row left ``deleting`` by a crash between the two steps of
DeleteArtifact loses its bytes and then the row. ``python -m server.artifacts expire``
runs it; the scheduled retention job runs the same sweep.
"""

from __future__ import annotations

from datetime import datetime

from core.artifacts import SweepReport, sweep
from core.db import make_engine
from core.objects import open_store
from server._config import ServerConfig

__all__ = ["SweepReport", "expire", "sweep"]


def expire(config: ServerConfig, *, now: datetime | None = None) -> SweepReport:
    """One sweep of the configured database and object store."""
    engine = make_engine(config.database_url)
    try:
        return sweep(
            engine,
            open_store(config.object_store_url, part_bytes=config.object_store_part_bytes),
            now=now,
        )
    finally:
        engine.dispose()
