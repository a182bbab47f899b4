"""One transfer of the artifact rows: the client side, timed, with the bytes it moved.

The gRPC rows all go through ``stream_upload`` / ``stream_download``: the same
``ArtifactServiceStub`` calls, the same 1 MiB WriteRequests cut from the same file by
``tests.server.artifacts._bytestream.write_requests``, received bytes counted and dropped.
Only the channel differs (the API server's carries a bearer token). The floors copy and
read the file with no network at all; the raw S3 rows are boto3's managed transfers.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentic.artifacts.v1 import artifacts_pb2 as pb
from agentic.artifacts.v1 import artifacts_pb2_grpc

from tests.server.artifacts._bytestream import CHUNK, create_upload, write_requests

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = [
    "CHUNK",
    "Transfer",
    "api_download",
    "api_upload",
    "bare_name",
    "boto3_download",
    "boto3_upload",
    "copy_file",
    "make_source",
    "read_file",
    "stream_download",
    "stream_upload",
    "timed",
]


@dataclass(frozen=True, slots=True)
class Transfer:
    """What one timed transfer moved and how long it took."""

    bytes: int
    seconds: float

    @property
    def mb_per_second(self) -> float:
        """Decimal megabytes (10^6 bytes) per second."""
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


def timed(move: Callable[[], int]) -> Transfer:
    """Run ``move`` (which returns the bytes it moved) under the clock."""
    start = time.perf_counter()
    moved = move()
    return Transfer(moved, time.perf_counter() - start)


def make_source(path: Path, size: int) -> None:
    """``size`` random bytes (incompressible) in ``path``, written in 1 MiB pieces."""
    with path.open("wb") as handle:
        left = size
        while left > 0:
            piece = os.urandom(min(CHUNK, left))
            handle.write(piece)
            left -= len(piece)


# -- the gRPC client, for the API server and the bare servicer alike -------------------------


def stream_upload(
    stub: artifacts_pb2_grpc.ArtifactServiceStub, upload_name: str, source: Path, timeout: float
) -> int:
    """One Write stream of the whole file in 1 MiB chunks, finished; the committed size."""
    with source.open("rb") as handle:
        reply: pb.WriteResponse = stub.Write(
            write_requests(handle, upload_name, chunk=CHUNK), timeout=timeout
        )
    return int(reply.committed_size)


def stream_download(
    stub: artifacts_pb2_grpc.ArtifactServiceStub, resource_name: str, timeout: float
) -> int:
    """One Read stream from offset 0 to the end; the bytes received (dropped)."""
    total = 0
    for message in stub.Read(pb.ReadRequest(resource_name=resource_name), timeout=timeout):
        total += len(message.data)
    return total


def api_upload(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    project_id: str,
    source: Path,
    sha256: str,
    timeout: float,
) -> tuple[str, int]:
    """CreateUpload (size and sha256 declared) and its Write stream: (artifact id, size)."""
    size = source.stat().st_size
    created = create_upload(stub, project_id, name="bench.csv", size=size, sha256=sha256)
    return created.artifact.id, stream_upload(stub, created.upload_name, source, timeout)


def api_download(
    stub: artifacts_pb2_grpc.ArtifactServiceStub, artifact_id: str, timeout: float
) -> int:
    """Read of the whole artifact."""
    return stream_download(stub, f"artifacts/{artifact_id}", timeout)


def bare_name() -> str:
    """A fresh upload name for the bare servicer (it writes to the file of that name)."""
    return f"uploads/{uuid.uuid4()}"


# -- the floors and the raw S3 client ----------------------------------------------------


def copy_file(source: Path, target: Path) -> int:
    """``shutil.copyfile`` (in-kernel on Linux: ``copy_file_range``/``sendfile``)."""
    shutil.copyfile(source, target)
    return target.stat().st_size


def read_file(path: Path) -> int:
    """Read the file in 1 MiB pieces into Python bytes, dropping them."""
    total = 0
    with path.open("rb") as handle:
        while piece := handle.read(CHUNK):
            total += len(piece)
    return total


def boto3_upload(client: S3Client, bucket: str, key: str, source: Path) -> int:
    """``upload_fileobj`` with boto3's default transfer settings (8 MiB parts, 10 threads)."""
    with source.open("rb") as handle:
        client.upload_fileobj(handle, bucket, key)
    return source.stat().st_size


def boto3_download(client: S3Client, bucket: str, key: str) -> int:
    """``download_fileobj`` to ``/dev/null`` with boto3's default transfer settings; the bytes
    its progress callback counted."""
    received = 0
    lock = threading.Lock()  # the callback runs in boto3's transfer threads

    def count(chunk: int) -> None:
        nonlocal received
        with lock:
            received += chunk

    with open(os.devnull, "wb") as sink:
        client.download_fileobj(bucket, key, sink, Callback=count)
    return received
