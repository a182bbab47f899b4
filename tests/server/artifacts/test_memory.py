"""A 1 GiB artifact goes up and comes back down without the API server holding it.

Memory is read from /proc: the server's resident set after a warm-up upload is the
baseline, its peak (VmHWM, reset through /proc/<pid>/clear_refs before the transfer) must
stay within 64 MiB of it while 1 GiB is uploaded and downloaded. The client streams from
and to files, and the bytes are compared by sha256 (hashlib over the source file).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.artifacts._bytestream import download, sha256_file, upload
from tests.server.artifacts._server import ArtifactServer

GIB = 1024**3
BOUND = 64 * 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ArtifactServer]:
    s = ArtifactServer(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _random_file(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        for _ in range(size // (8 * 1024 * 1024)):
            out.write(os.urandom(8 * 1024 * 1024))
        out.write(os.urandom(size % (8 * 1024 * 1024)))
    return path


def test_one_gib_up_and_down_costs_the_server_under_64_mib(
    server: ArtifactServer, tmp_path: Path
) -> None:
    assert server.service is not None
    pid = server.service.process.pid
    stub = server.stub()
    project = server.project()
    # Warm-up: imports, thread pools, channel buffers.
    warm = upload(stub, project, _random_file(tmp_path / "warm.bin", 32 * 1024 * 1024))
    with (tmp_path / "warm.down").open("wb") as out:
        download(stub, warm.id, out)
    baseline = _status_kib(pid, "VmRSS") * 1024
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS from here on

    source = _random_file(tmp_path / "big.bin", GIB)
    artifact = upload(stub, project, source, name="big.bin")
    target = tmp_path / "big.down"
    with target.open("wb") as out:
        assert download(stub, artifact.id, out) == GIB

    peak = _status_kib(pid, "VmHWM") * 1024
    assert peak - baseline < BOUND, (
        f"the server's peak RSS grew by {(peak - baseline) / 2**20:.1f} MiB "
        f"(baseline {baseline / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB) for 1 GiB"
    )
    expected = sha256_file(source)
    assert artifact.sha256 == expected
    assert sha256_file(target) == expected
