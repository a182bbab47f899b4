"""Moving bytes: chunk size, the retry policy, a rate limit, the progress bar, and downloads.

Downloads resume from the size of the file already on disk (``Read`` from that offset)
and check the artifact's sha256 over the whole file at the end; a broken stream resumes
from the bytes written so far.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import grpc
from agentic.artifacts.v1 import artifacts_pb2 as pb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cli._errors import ExitCode
from cli._render import fmt_bytes
from cli._session import Session
from core.backoff import Backoff

__all__ = [
    "CHUNK_BYTES",
    "MAX_RETRIES",
    "RETRY",
    "TRANSIENT",
    "Pacer",
    "download_to",
    "parse_rate",
    "transfer_bar",
]

CHUNK_BYTES = 1024 * 1024
"""Bytes per Write/Read message: the protocol's largest chunk."""
RETRY = Backoff(first_seconds=0.25, max_seconds=8.0)
"""Waits between attempts of a broken transfer."""
MAX_RETRIES = 8
"""Failed attempts in a row before a transfer gives up."""

# Codes after which the same transfer resumes: a broken connection, a server restart, the
# previous stream still holding the upload (UPLOAD_BUSY) for a moment after a kill.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})


def transfer_bar(session: Session) -> Progress:
    """A bar with bytes, rate and time left on stderr (none with ``--output json``)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=session.output.err,
        # --output json: no bar; scripts read the result line.
        disable=session.output.json,
    )


class Pacer:
    """Holds a transfer from byte ``offset`` on at or below ``rate`` bytes per second (None:
    as fast as it goes), by sleeping once it is ahead of that pace."""

    def __init__(self, rate: int | None, offset: int) -> None:
        self._rate = rate
        self._offset = offset
        self._start = time.monotonic()

    def reached(self, position: int) -> None:
        """The transfer is at byte ``position``: wait until the pace allows going on."""
        if self._rate is None:
            return
        ahead = (position - self._offset) / self._rate - (time.monotonic() - self._start)
        if ahead > 0:
            time.sleep(ahead)


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_rate(text: str) -> int:
    """``500K``, ``20M``, ``1G`` (binary units) or a number of bytes, per second."""
    number, unit = text[:-1], text[-1:].upper()
    if unit not in _UNITS or unit == "":
        number, unit = text, ""
    try:
        rate = int(float(number) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 500K, 20M)") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"a rate must be above 0, not {text!r}")
    return rate


def download_to(
    session: Session,
    artifact_id: str,
    target: str,
    *,
    overwrite: bool,
    rate: int | None = None,
) -> int:
    """Download an artifact to ``target``, resuming from the size of the file there (unless
    ``overwrite``), and check its sha256 at the end."""
    stub = artifacts_pb2_grpc.ArtifactServiceStub(session.channel)
    artifact = session.call(stub.GetArtifact, pb.GetArtifactRequest(id=artifact_id)).artifact
    path = Path(target)
    offset = path.stat().st_size if path.exists() and not overwrite else 0
    if offset > artifact.size_bytes:
        session.output.note(
            f"error: {path} is larger than artifact {artifact.id}: --overwrite replaces it"
        )
        return ExitCode.FAILED
    digest = hashlib.sha256()
    if offset:
        with path.open("rb") as f:
            while piece := f.read(CHUNK_BYTES):
                digest.update(piece)
    delays = RETRY.delays()
    failures = 0
    with transfer_bar(session) as progress, path.open("ab" if offset else "wb") as out:
        bar = progress.add_task("downloading", total=artifact.size_bytes, completed=offset)
        if offset:
            progress.console.print(f"resuming {path} at {offset} bytes", markup=False)
        while offset < artifact.size_bytes:
            pace = Pacer(rate, offset)
            request = pb.ReadRequest(resource_name=f"artifacts/{artifact.id}", read_offset=offset)
            try:
                for response in session.stream(stub.Read, request, None):
                    out.write(response.data)
                    digest.update(response.data)
                    offset += len(response.data)
                    progress.update(bar, completed=offset)
                    pace.reached(offset)
                    failures, delays = 0, RETRY.delays()
            except grpc.RpcError as error:
                if error.code() not in TRANSIENT or failures >= MAX_RETRIES:
                    raise
                failures += 1
                wait = next(delays)
                progress.console.print(
                    f"download broke ({error.code().name}); resuming at {offset} in {wait:.1f} s",
                    markup=False,
                )
                out.flush()
                time.sleep(wait)
    if digest.hexdigest() != artifact.sha256:
        session.output.note(
            f"error: {path} does not hash to the artifact's sha256 {artifact.sha256}; "
            "download it again with --overwrite"
        )
        return ExitCode.FAILED
    session.output.emit(
        "download",
        path=str(path),
        artifact_id=artifact.id,
        size_bytes=artifact.size_bytes,
        sha256=artifact.sha256,
    )
    if not session.output.json:
        session.output.note(f"{path}: {fmt_bytes(artifact.size_bytes)}, sha256 {artifact.sha256}")
    return ExitCode.OK
