"""Artifacts: documents and datasets in object storage, their uploads (ByteStream Write,
resumable), reads (ByteStream Read), cached metadata and the ArtifactService servicer."""

from server.artifacts._expiry import SweepReport, expire, sweep
from server.artifacts._facade import Artifacts
from server.artifacts._service import ArtifactService
from server.artifacts._store import DOMAIN, ArtifactStore
from server.artifacts._uploads import ArtifactLimits

__all__ = [
    "DOMAIN",
    "ArtifactLimits",
    "ArtifactService",
    "ArtifactStore",
    "Artifacts",
    "SweepReport",
    "expire",
    "sweep",
]
