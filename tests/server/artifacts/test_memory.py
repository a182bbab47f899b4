"""A 1 GiB artifact goes up and comes back down without the API server holding it.

Memory is read from /proc/<pid>/status. The server's resident set (VmRSS) after a warm-up
upload and download (imports, thread pools, channel and allocator state) is the baseline;
its peak (VmHWM, reset to the current RSS through /proc/<pid>/clear_refs before each
phase) must stay within 64 MiB of the baseline while 1 GiB is uploaded, and again while it
is downloaded. The client streams from a file generated on disk in pieces and hashes the
download as it arrives, so the test process's own peak is held to the same bound: neither
side may buffer the artifact. The bytes are compared by sha256 (hashlib), on the server at
finish (declared) and here after the download.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from agentic.artifacts.v1 import artifacts_pb2 as pb

from tests.server.artifacts._bytestream import create_upload, write_requests
from tests.server.artifacts._server import ArtifactServer

MIB = 1024 * 1024
GIB = 1024 * MIB
BOUND = 64 * MIB
WARM_UP = 32 * MIB
PIECE = 8 * MIB
TIMEOUT = 120.0  # one call moves 1 GiB: seconds on loopback, minutes on nothing sane

T = TypeVar("T")


def _status_bytes(pid: int | str, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int | str) -> None:
    """VmHWM := VmRSS from now on (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class _Phase:
    """One transfer: how long it took and the peaks it caused, against the baseline."""

    name: str
    seconds: float
    server_peak: int
    client_peak: int

    def describe(self, server_baseline: int, client_baseline: int) -> str:
        return (
            f"{self.name}: {GIB / MIB / self.seconds:.0f} MiB/s ({self.seconds:.1f} s), server "
            f"peak +{(self.server_peak - server_baseline) / MIB:.1f} MiB, client peak "
            f"+{(self.client_peak - client_baseline) / MIB:.1f} MiB"
        )


def _measured(name: str, pid: int, transfer: Callable[[], T]) -> tuple[T, _Phase]:
    """Run ``transfer`` with both peaks reset; its result and its phase."""
    _reset_peak(pid)
    _reset_peak("self")
    started = time.monotonic()
    result = transfer()
    seconds = time.monotonic() - started
    return result, _Phase(
        name, seconds, _status_bytes(pid, "VmHWM"), _status_bytes("self", "VmHWM")
    )


def _source(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` in pieces; their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            piece = os.urandom(min(PIECE, left))
            digest.update(piece)
            out.write(piece)
            left -= len(piece)
    return digest.hexdigest()


def _upload(server: ArtifactServer, project: str, path: Path, sha256: str) -> pb.Artifact:
    """Create an upload declaring size and sha256 and stream the file in one Write."""
    stub = server.stub()
    size = path.stat().st_size
    created = create_upload(stub, project, name=path.name, size=size, sha256=sha256)
    with path.open("rb") as source:
        written = stub.Write(write_requests(source, created.upload_name), timeout=TIMEOUT)
    assert written.committed_size == size
    artifact: pb.Artifact = stub.GetArtifact(
        pb.GetArtifactRequest(id=created.artifact.id), timeout=TIMEOUT
    ).artifact
    return artifact


def _download(server: ArtifactServer, artifact_id: str) -> tuple[int, str]:
    """Size and sha256 of the artifact's bytes, hashed as they arrive (never held)."""
    digest, size = hashlib.sha256(), 0
    read = pb.ReadRequest(resource_name=f"artifacts/{artifact_id}")
    for message in server.stub().Read(read, timeout=TIMEOUT):
        digest.update(message.data)
        size += len(message.data)
    return size, digest.hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ArtifactServer]:
    """An API server on SQLite and the file store (default part size and IO threads)."""
    s = ArtifactServer(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        # pytest keeps the last runs' directories: do not leave a GiB or two behind.
        for path in tmp_path.glob("*.bin"):
            path.unlink()
        for path in s.objects.rglob("*"):
            if path.is_file():
                path.unlink()


def test_one_gib_up_and_down_costs_the_server_under_64_mib(
    server: ArtifactServer, tmp_path: Path
) -> None:
    assert server.service is not None
    pid = server.service.process.pid
    project = server.project()
    warm_sha = _source(tmp_path / "warm.bin", WARM_UP)
    warm = _upload(server, project, tmp_path / "warm.bin", warm_sha)
    assert _download(server, warm.id) == (WARM_UP, warm_sha)
    source = tmp_path / "big.bin"
    expected = _source(source, GIB)

    server_baseline = _status_bytes(pid, "VmRSS")
    client_baseline = _status_bytes("self", "VmRSS")
    artifact, up = _measured("upload", pid, lambda: _upload(server, project, source, expected))
    downloaded, down = _measured("download", pid, lambda: _download(server, artifact.id))
    phases = (up, down)
    retained = _status_bytes(pid, "VmRSS") - server_baseline

    figures = "; ".join(p.describe(server_baseline, client_baseline) for p in phases)
    report = (
        f"1 GiB through the server (baseline after a {WARM_UP // MIB} MiB warm-up: server "
        f"{server_baseline / MIB:.1f} MiB, client {client_baseline / MIB:.1f} MiB): {figures}; "
        f"the server retained +{retained / MIB:.1f} MiB"
    )
    print(report)
    for phase in phases:
        assert phase.server_peak - server_baseline < BOUND, (
            f"the server's peak RSS during the {phase.name} is more than "
            f"{BOUND // MIB} MiB above its baseline: {report}"
        )
        assert phase.client_peak - client_baseline < BOUND, (
            f"the client's peak RSS during the {phase.name} is more than "
            f"{BOUND // MIB} MiB above its baseline: {report}"
        )
    assert artifact.state == pb.ARTIFACT_STATE_READY
    assert (artifact.size_bytes, artifact.sha256) == (GIB, expected)
    assert downloaded == (GIB, expected), "the bytes read back are not the source's"
