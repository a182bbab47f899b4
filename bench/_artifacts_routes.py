"""The paths a file takes in the artifact rows, each with one upload, download and removal.

A route moves the source file one way (``upload``), then back (``download``), then removes
what it stored (``remove``, untimed). ``ApiRoute`` is the product (either object store
behind the API server); ``BareRoute``, ``FileRoute`` and ``Boto3Route`` are the
baselines. The timed parts are in ``bench._artifacts_client``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agentic.artifacts.v1 import artifacts_pb2 as pb
from agentic.artifacts.v1 import artifacts_pb2_grpc

from bench._artifacts_client import (
    api_download,
    api_upload,
    bare_name,
    boto3_download,
    boto3_upload,
    copy_file,
    read_file,
    stream_download,
    stream_upload,
)

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = ["ApiRoute", "BareRoute", "Boto3Route", "FileRoute", "Route"]

_CALL_TIMEOUT_SECONDS = 10.0


class Route(Protocol):
    """One path of the section: what it is called and which processes serve it."""

    key: str
    name: str
    server_pid: int | None
    """The gRPC server of the path (RSS and CPU), None when there is none."""
    s3_pid: int | None
    """The S3 server behind it, None when there is none."""

    def upload(self, source: Path, timeout: float) -> int:
        """Move the source into the path's store; the bytes moved."""
        ...

    def download(self, timeout: float) -> int:
        """Move what the last upload stored back; the bytes received."""
        ...

    def remove(self) -> None:
        """Remove what the last upload stored (untimed)."""
        ...


@dataclass
class ApiRoute:
    """The API server: CreateUpload + Write, Read, DeleteArtifact."""

    key: str
    name: str
    stub: artifacts_pb2_grpc.ArtifactServiceStub
    project_id: str
    digests: dict[Path, str]
    """The sha256 of each file it uploads (declared at CreateUpload)."""
    server_pid: int | None
    s3_pid: int | None = None
    problems: list[str] = field(default_factory=list)
    """What a removal found wrong with the artifact (sanity)."""
    _artifact_id: str = ""
    _size: int = 0

    def upload(self, source: Path, timeout: float) -> int:
        self._size = source.stat().st_size
        self._artifact_id, moved = api_upload(
            self.stub, self.project_id, source, self.digests[source], timeout
        )
        return moved

    def download(self, timeout: float) -> int:
        return api_download(self.stub, self._artifact_id, timeout)

    def remove(self) -> None:
        if not self._artifact_id:
            return
        artifact = self.stub.GetArtifact(
            pb.GetArtifactRequest(id=self._artifact_id), timeout=_CALL_TIMEOUT_SECONDS
        ).artifact
        ready = artifact.state == pb.ARTIFACT_STATE_READY
        if not ready or artifact.size_bytes != self._size:
            self.problems.append(
                f"{self.name}: artifact {artifact.id} is {pb.ArtifactState.Name(artifact.state)} "
                f"with {artifact.size_bytes} bytes"
            )
        self.stub.DeleteArtifact(
            pb.DeleteArtifactRequest(id=artifact.id, etag=artifact.etag),
            timeout=_CALL_TIMEOUT_SECONDS,
        )
        self._artifact_id = ""


@dataclass
class BareRoute:
    """The bare servicer: the same Write and Read calls, to a file of its directory."""

    key: str
    name: str
    stub: artifacts_pb2_grpc.ArtifactServiceStub
    directory: Path
    """Where the servicer writes (``BENCH_DIR``)."""
    server_pid: int | None
    s3_pid: int | None = None
    _upload_name: str = ""

    def upload(self, source: Path, timeout: float) -> int:
        self._upload_name = bare_name()
        return stream_upload(self.stub, self._upload_name, source, timeout)

    def download(self, timeout: float) -> int:
        name = self._upload_name.rsplit("/", 1)[-1]
        return stream_download(self.stub, f"artifacts/{name}", timeout)

    def remove(self) -> None:
        if self._upload_name:
            (self.directory / self._upload_name.rsplit("/", 1)[-1]).unlink(missing_ok=True)
            self._upload_name = ""


@dataclass
class FileRoute:
    """The physical floor: copy the file, read the copy (no network, no server)."""

    key: str
    name: str
    target: Path
    server_pid: int | None = None
    s3_pid: int | None = None

    def upload(self, source: Path, timeout: float) -> int:
        return copy_file(source, self.target)

    def download(self, timeout: float) -> int:
        return read_file(self.target)

    def remove(self) -> None:
        self.target.unlink(missing_ok=True)


@dataclass
class Boto3Route:
    """boto3's managed transfers straight to the S3 server (its own timeouts bound them)."""

    key: str
    name: str
    client: S3Client
    bucket: str
    s3_pid: int | None
    server_pid: int | None = None
    _key: str = "raw/bench.bin"
    _stored: bool = False

    def upload(self, source: Path, timeout: float) -> int:
        moved = boto3_upload(self.client, self.bucket, self._key, source)
        self._stored = True
        return moved

    def download(self, timeout: float) -> int:
        return boto3_download(self.client, self.bucket, self._key)

    def remove(self) -> None:
        if self._stored:
            self.client.delete_object(Bucket=self.bucket, Key=self._key)
            self._stored = False
