"""The wire form (protobuf) of artifacts, and the enum words the table stores."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from agentic.artifacts.v1 import artifacts_pb2
from google.protobuf import timestamp_pb2

from server.artifacts._store import Artifact

__all__ = ["FORMATS", "KINDS", "STATES", "to_proto", "word"]

KINDS: Mapping[int, str] = {
    artifacts_pb2.ARTIFACT_KIND_DOCUMENT: "document",
    artifacts_pb2.ARTIFACT_KIND_DATASET: "dataset",
}
STATES: Mapping[int, str] = {
    artifacts_pb2.ARTIFACT_STATE_UPLOADING: "uploading",
    artifacts_pb2.ARTIFACT_STATE_READY: "ready",
    artifacts_pb2.ARTIFACT_STATE_FAILED: "failed",
}
FORMATS: Mapping[int, str] = {
    artifacts_pb2.DATASET_FORMAT_CSV: "csv",
    artifacts_pb2.DATASET_FORMAT_PARQUET: "parquet",
    artifacts_pb2.DATASET_FORMAT_JSONL: "jsonl",
}


def word(table: Mapping[int, str], value: int) -> str:
    """The stored word of an enum value; "" for UNSPECIFIED (0)."""
    return table.get(value, "")


def _number(table: Mapping[int, str], stored: str) -> int:
    for number, name in table.items():
        if name == stored:
            return number
    return 0


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_proto(artifact: Artifact) -> artifacts_pb2.Artifact:
    """The wire form of a stored artifact."""
    return artifacts_pb2.Artifact(
        id=artifact.id,
        project_id=artifact.project_id,
        name=artifact.name,
        kind=_number(KINDS, artifact.kind),  # type: ignore[arg-type]  # an ArtifactKind value
        content_type=artifact.content_type,
        size_bytes=artifact.size_bytes,
        sha256=artifact.sha256,
        state=_number(STATES, artifact.state),  # type: ignore[arg-type]  # an ArtifactState value
        work_products=artifact.work_products,
        format=_number(FORMATS, artifact.format),  # type: ignore[arg-type]  # a DatasetFormat value
        create_time=_timestamp(artifact.create_time),
        update_time=_timestamp(artifact.update_time),
        etag=artifact.etag,
        owner_id=artifact.owner_id,
        expire_time=_timestamp(artifact.expire_time),
        failure_reason=artifact.failure_reason,
    )
