"""Client side of ByteStream uploads and downloads, as a user would write it (tests, bench).

``write_requests`` cuts a byte source into WriteRequests of ``chunk`` bytes from an
offset; ``upload`` creates an upload and writes it, resuming from QueryWriteStatus after
a broken stream; ``download`` joins a Read stream into a file or bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import grpc
from agentic.artifacts.v1 import artifacts_pb2 as pb
from agentic.artifacts.v1 import artifacts_pb2_grpc

CHUNK = 1024 * 1024
TIMEOUT = 60.0
_CONTENT_TYPES = {
    pb.DATASET_FORMAT_CSV: "text/csv",
    pb.DATASET_FORMAT_PARQUET: "application/vnd.apache.parquet",
    pb.DATASET_FORMAT_JSONL: "application/jsonl",
}


def write_requests(
    source: BinaryIO,
    upload_name: str,
    *,
    offset: int = 0,
    stop: int | None = None,
    finish: bool = True,
    chunk: int = CHUNK,
) -> Iterator[pb.WriteRequest]:
    """WriteRequests for ``source``'s bytes from ``offset`` to ``stop`` (None: its end);
    the last one finishes the upload when ``finish``. Always at least one message."""
    source.seek(offset)
    first = True
    while True:
        want = chunk if stop is None else min(chunk, stop - offset)
        data = source.read(want) if want > 0 else b""
        last = not data or (stop is not None and offset + len(data) >= stop)
        if not last:
            # Peek: is this the end of the source?
            here = source.tell()
            last = not source.read(1)
            source.seek(here)
        yield pb.WriteRequest(
            resource_name=upload_name if first else "",
            write_offset=offset,
            data=data,
            finish_write=finish and last,
        )
        first = False
        offset += len(data)
        if last:
            return


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of a file, read in pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(CHUNK):
            digest.update(piece)
    return digest.hexdigest()


def create_upload(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    project_id: str,
    *,
    name: str = "data.csv",
    size: int | None = None,
    sha256: str = "",
    kind: int = pb.ARTIFACT_KIND_DATASET,
    fmt: pb.DatasetFormat.ValueType = pb.DATASET_FORMAT_CSV,
) -> pb.CreateUploadResponse:
    """CreateUpload of a dataset of format ``fmt`` (or a document when ``kind`` says so)."""
    dataset = kind == pb.ARTIFACT_KIND_DATASET
    request = pb.CreateUploadRequest(
        project_id=project_id,
        name=name,
        kind=kind,  # type: ignore[arg-type]  # an ArtifactKind value
        content_type=_CONTENT_TYPES[fmt] if dataset else "application/pdf",
        sha256=sha256,
    )
    if dataset:
        request.format = fmt
    if size is not None:
        request.size_bytes = size
    response: pb.CreateUploadResponse = stub.CreateUpload(request, timeout=TIMEOUT)
    return response


def upload(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    project_id: str,
    path: Path,
    *,
    name: str = "data.csv",
    fmt: pb.DatasetFormat.ValueType = pb.DATASET_FORMAT_CSV,
    kind: int = pb.ARTIFACT_KIND_DATASET,
    attempts: int = 5,
) -> pb.Artifact:
    """Upload ``path``, a dataset of format ``fmt`` (or a document when ``kind`` says so),
    size and sha256 declared, and return the READY artifact.

    A stream that breaks (UNAVAILABLE, ABORTED while the server settles) is resumed from
    QueryWriteStatus.committed_size, at most ``attempts`` times.
    """
    size = path.stat().st_size
    created = create_upload(
        stub, project_id, name=name, size=size, sha256=sha256_file(path), kind=kind, fmt=fmt
    )
    offset = 0
    for attempt in range(attempts):
        try:
            with path.open("rb") as source:
                stub.Write(
                    write_requests(source, created.upload_name, offset=offset), timeout=TIMEOUT
                )
            break
        except grpc.RpcError as error:
            retriable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)
            if error.code() not in retriable or attempt == attempts - 1:
                raise
            status = stub.QueryWriteStatus(
                pb.QueryWriteStatusRequest(resource_name=created.upload_name), timeout=TIMEOUT
            )
            offset = status.committed_size
    got: pb.Artifact = stub.GetArtifact(
        pb.GetArtifactRequest(id=created.artifact.id), timeout=TIMEOUT
    ).artifact
    return got


def download(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    artifact_id: str,
    target: BinaryIO,
    *,
    offset: int = 0,
    limit: int = 0,
) -> int:
    """Write the artifact's bytes (from ``offset``, at most ``limit``) to ``target``;
    returns how many."""
    total = 0
    request = pb.ReadRequest(
        resource_name=f"artifacts/{artifact_id}", read_offset=offset, read_limit=limit
    )
    for message in stub.Read(request, timeout=TIMEOUT):
        target.write(message.data)
        total += len(message.data)
    return total


def data_requests(
    upload_name: str,
    data: bytes,
    *,
    offset: int = 0,
    finish: bool = True,
    chunk: int = CHUNK,
) -> list[pb.WriteRequest]:
    """WriteRequests for ``data`` (in memory) written at ``offset``; the last one finishes
    the upload when ``finish``. Always at least one message."""
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    requests = []
    for index, piece in enumerate(pieces):
        requests.append(
            pb.WriteRequest(
                resource_name=upload_name if index == 0 else "",
                write_offset=offset,
                data=piece,
                finish_write=finish and index == len(pieces) - 1,
            )
        )
        offset += len(piece)
    return requests


def write_bytes(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    upload_name: str,
    data: bytes,
    *,
    offset: int = 0,
    finish: bool = True,
    chunk: int = CHUNK,
) -> int:
    """One Write stream of ``data`` at ``offset``; returns the committed size."""
    requests = data_requests(upload_name, data, offset=offset, finish=finish, chunk=chunk)
    response: pb.WriteResponse = stub.Write(iter(requests), timeout=TIMEOUT)
    return response.committed_size


def read_pieces(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    artifact_id: str,
    *,
    offset: int = 0,
    limit: int = 0,
) -> list[bytes]:
    """The data of every ReadResponse of one Read stream, as sent."""
    request = pb.ReadRequest(
        resource_name=f"artifacts/{artifact_id}", read_offset=offset, read_limit=limit
    )
    return [message.data for message in stub.Read(request, timeout=TIMEOUT)]
