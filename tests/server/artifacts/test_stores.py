"""Round trips through the API server on both object stores, and the expiry command.

The same uploads and downloads run against a server on the file store and one on S3 (a
moto S3 server process on loopback); sizes at the edges (0 B, 1 B, exactly one chunk, a
few chunks and a remainder, and 300 MiB) come back with the source's sha256. On S3 an
upload also resumes after a cut. ``python -m server.artifacts expire`` turns an overdue
upload FAILED and leaves no bytes behind, on either store.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from agentic.artifacts.v1 import artifacts_pb2 as pb

from devtools.s3 import S3Server
from tests._status import rich_status
from tests._support import REPO
from tests.server.artifacts._bytestream import (
    create_upload,
    download,
    sha256_file,
    upload,
    write_requests,
)
from tests.server.artifacts._server import TIMEOUT, ArtifactServer

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module", params=["file", "s3"])
def server(
    request: pytest.FixtureRequest, s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ArtifactServer]:
    """A server on the file store, or on a fresh bucket of the S3 server."""
    extra: dict[str, str] = {"AGENTIC_OBJECT_STORE_PART_BYTES": str(5 * MIB)}
    if request.param == "s3":
        bucket = f"t-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(bucket)
        extra |= {**s3.env(), "AGENTIC_OBJECT_STORE_URL": f"s3://{bucket}/objects"}
    s = ArtifactServer(tmp_path_factory.mktemp(request.param), extra)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _random_file(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        left = size
        while left:
            piece = min(left, 8 * MIB)
            out.write(os.urandom(piece))
            left -= piece
    return path


@pytest.mark.parametrize("size", [0, 1, MIB, 3 * MIB + 17], ids=["0B", "1B", "1MiB", "3MiB+17"])
def test_round_trip(server: ArtifactServer, tmp_path: Path, size: int) -> None:
    stub = server.stub()
    source = _random_file(tmp_path / "source", size)
    artifact = upload(stub, server.project(), source)
    assert artifact.state == pb.ARTIFACT_STATE_READY
    assert artifact.size_bytes == size
    target = tmp_path / "target"
    with target.open("wb") as out:
        assert download(stub, artifact.id, out) == size
    assert sha256_file(target) == hashlib.sha256(source.read_bytes()).hexdigest()
    assert artifact.sha256 == sha256_file(target)


def test_300_mib_round_trip(server: ArtifactServer, tmp_path: Path) -> None:
    stub = server.stub()
    source = _random_file(tmp_path / "source", 300 * MIB)
    artifact = upload(stub, server.project(), source)
    target = tmp_path / "target"
    with target.open("wb") as out:
        assert download(stub, artifact.id, out) == 300 * MIB
    expected = sha256_file(source)
    assert artifact.sha256 == expected
    assert sha256_file(target) == expected


def test_a_cut_upload_resumes(server: ArtifactServer, tmp_path: Path) -> None:
    stub = server.stub()
    source = _random_file(tmp_path / "source", 7 * MIB + 5)
    created = create_upload(stub, server.project(), size=source.stat().st_size)
    with source.open("rb") as f:
        # Two streams that end without finishing (past a part and within the next one).
        stub.Write(
            write_requests(f, created.upload_name, stop=6 * MIB, finish=False), timeout=TIMEOUT
        )
        committed = stub.QueryWriteStatus(
            pb.QueryWriteStatusRequest(resource_name=created.upload_name), timeout=TIMEOUT
        ).committed_size
        assert committed == 6 * MIB
        stub.Write(write_requests(f, created.upload_name, offset=committed), timeout=TIMEOUT)
    target = tmp_path / "target"
    with target.open("wb") as out:
        download(stub, created.artifact.id, out)
    assert sha256_file(target) == sha256_file(source)


def test_expired_uploads_fail_and_leave_no_bytes(server: ArtifactServer, s3: S3Server) -> None:
    stub = server.stub()
    created = create_upload(stub, server.project(), size=10 * MIB)
    stub.Write(
        write_requests(io.BytesIO(bytes(6 * MIB)), created.upload_name, finish=False),
        timeout=TIMEOUT,
    )
    assert server.service is not None
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{server.workdir / 'api.db'}",
        "AGENTIC_OBJECT_STORE_URL": server.objects.resolve().as_uri(),
        **server.extra,  # the S3 store and its AWS variables, when this server uses them
    }
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    done = subprocess.run(
        [sys.executable, "-m", "server.artifacts", "expire", "--now", later],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"expired_uploads": 1' in done.stdout, done.stdout
    artifact = stub.GetArtifact(pb.GetArtifactRequest(id=created.artifact.id), timeout=TIMEOUT)
    assert artifact.artifact.state == pb.ARTIFACT_STATE_FAILED
    assert "expired" in artifact.artifact.failure_reason
    with pytest.raises(grpc.RpcError) as info:
        stub.Write(write_requests(io.BytesIO(), created.upload_name), timeout=TIMEOUT)
    assert rich_status(info.value).reason == "UPLOAD_FAILED"
    url = server.extra.get("AGENTIC_OBJECT_STORE_URL", "")
    if url.startswith("s3://"):
        bucket = url.removeprefix("s3://").split("/", 1)[0]
        uploads = s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        mine = [u for u in uploads if created.artifact.id in u["Key"]]
        assert mine == [], "the expired upload's multipart upload was aborted"
        left = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
        assert [o["Key"] for o in left if created.artifact.id in o["Key"]] == []
    else:
        assert [p for p in server.objects.rglob(f"*{created.artifact.id}*")] == []
