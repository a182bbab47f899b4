"""Interleaved passes over the artifact routes: each pass moves the file along every route,
upload then download, with CPU and peak RSS metered around each transfer.

A transfer that fails is counted (by gRPC status code or exception type) and its pass
has no figure for that row; the next pass tries again. Passes stop early, after the
first, once the section's deadline has passed (the report says so).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench._artifacts_client import CHUNK, Transfer, timed
from bench._artifacts_memory import PeakMeter, minor_faults, resident_mib
from bench._artifacts_report import CPU_ROLES, ArtifactRow
from bench._artifacts_routes import Route
from bench._cpu import CpuMeter
from devtools.measure import error_name

__all__ = ["DIRECTIONS", "Tally", "baselines", "rows", "run_passes", "warm_up"]

DIRECTIONS = ("upload", "download")
_MIB = 1024 * 1024


@dataclass
class Tally:
    """What the passes measured for one route in one direction."""

    transfers: list[Transfer] = field(default_factory=list)
    cpu_ms_per_mib: list[dict[str, float]] = field(default_factory=list)
    server_peaks_mib: list[float] = field(default_factory=list)
    s3_peaks_mib: list[float] = field(default_factory=list)
    server_faults_per_mib: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def _metered(route: Route, move: Callable[[], int], size: int, tally: Tally) -> bool:
    """Run one transfer under the meters; add it to ``tally``; False when it failed."""
    client, server, s3 = CPU_ROLES
    cpu = CpuMeter({client: os.getpid(), server: route.server_pid, s3: route.s3_pid})
    with ExitStack() as meters:
        server_peak, s3_peak = (
            None if pid is None else meters.enter_context(PeakMeter(pid))
            for pid in (route.server_pid, route.s3_pid)
        )
        faults = minor_faults(route.server_pid) if route.server_pid else None
        cpu.start()
        try:
            transfer = timed(move)
        except Exception as exc:
            tally.errors[error_name(exc)] += 1
            return False
        finally:
            cpu.stop()
            faults_after = minor_faults(route.server_pid) if route.server_pid else None
    if transfer.bytes != size:
        tally.errors[f"moved {transfer.bytes} of {size} bytes"] += 1
        return False
    tally.transfers.append(transfer)
    mib = transfer.bytes / _MIB
    tally.cpu_ms_per_mib.append({role: s * 1000 / mib for role, s in cpu.seconds.items()})
    if faults is not None and faults_after is not None:
        tally.server_faults_per_mib.append((faults_after - faults) / mib)
    if server_peak is not None and server_peak.peak_mib is not None:
        tally.server_peaks_mib.append(server_peak.peak_mib)
    if s3_peak is not None and s3_peak.peak_mib is not None:
        tally.s3_peaks_mib.append(s3_peak.peak_mib)
    return True


def back_free_memory(scratch: Path, size: int) -> None:
    """Write and delete ``size`` bytes of page cache, so the next transfer finds free memory
    the hypervisor backs.

    This machine is a VM whose balloon driver hands free memory back to the host a few
    seconds after it was freed (free page reporting); the first touch of such a page costs
    a fault in the host, which made the same 256 MiB file write take 7x the CPU at random
    (measured: 1.8 against 0.25 ms/MiB). Freed just now, the pages are reused while still
    backed, so every row pays the same.
    """
    piece = bytes(CHUNK)
    with scratch.open("wb") as handle:
        for _ in range(0, size, CHUNK):
            handle.write(piece)
    scratch.unlink()  # dirty pages of a deleted file are dropped, never written back


def _round_trip(
    route: Route, source: Path, timeout: float, up: Tally, down: Tally, size: int
) -> None:
    scratch = source.with_name("scratch.bin")
    try:
        back_free_memory(scratch, size)
        if _metered(route, lambda: route.upload(source, timeout), size, up):
            back_free_memory(scratch, size)
            _metered(route, lambda: route.download(timeout), size, down)
    finally:
        route.remove()
        # Written-back before the next route starts, so no route pays for another's
        # dirty pages (the bare servicer and the copy do not fsync; the file store does).
        os.sync()


def warm_up(routes: Sequence[Route], source: Path, timeout: float) -> None:
    """One small untimed round trip per route: channels, connections, code paths warm."""
    size = source.stat().st_size
    for route in routes:
        up, down = Tally(), Tally()
        _round_trip(route, source, timeout, up, down, size)
        failed = up.errors + down.errors
        if failed:
            raise RuntimeError(f"warm-up of {route.name} failed: {dict(failed)}")


def baselines(routes: Sequence[Route]) -> dict[str, float]:
    """Idle RSS (MiB) of each route's gRPC server, by route key."""
    out: dict[str, float] = {}
    for route in routes:
        if route.server_pid:
            value = resident_mib(route.server_pid)
            if value is not None:
                out[route.key] = value
    return out


def run_passes(
    routes: Sequence[Route],
    source: Path,
    *,
    passes: int,
    timeout: float,
    deadline: float,
    progress: Callable[[str], None],
) -> tuple[dict[tuple[str, str], Tally], int]:
    """Tallies by (route key, direction), and how many passes ran."""
    size = source.stat().st_size
    tallies = {(r.key, d): Tally() for r in routes for d in DIRECTIONS}
    done = 0
    for number in range(passes):
        if number and time.monotonic() > deadline:
            break
        progress(f"artifacts: pass {number + 1} of {passes}")
        for route in routes:
            up, down = tallies[route.key, "upload"], tallies[route.key, "download"]
            _round_trip(route, source, timeout, up, down, size)
        done += 1
    return tallies, done


def rows(
    routes: Sequence[Route],
    tallies: dict[tuple[str, str], Tally],
    idle_mib: dict[str, float],
    labels: dict[str, str],
) -> list[ArtifactRow]:
    """One row per route and direction, uploads first; ``labels`` by route key: its path."""
    out: list[ArtifactRow] = []
    for direction in DIRECTIONS:
        for route in routes:
            tally = tallies[route.key, direction]
            speeds = [t.mb_per_second for t in tally.transfers]
            best = speeds.index(max(speeds)) if speeds else None
            peak = max(tally.server_peaks_mib, default=None)
            idle = idle_mib.get(route.key)
            out.append(
                ArtifactRow(
                    key=f"{route.key}:{direction}",
                    label=f"{direction}: {route.name}",
                    path=labels.get(route.key, ""),
                    passes_mb_s=speeds,
                    server_peak_mib=peak,
                    server_growth_mib=None
                    if peak is None or idle is None
                    else max(0.0, peak - idle),
                    s3_peak_mib=max(tally.s3_peaks_mib, default=None),
                    cpu_ms_per_mib={} if best is None else tally.cpu_ms_per_mib[best],
                    server_faults_per_mib=None
                    if best is None or len(tally.server_faults_per_mib) != len(speeds)
                    else tally.server_faults_per_mib[best],
                    errors=dict(tally.errors),
                )
            )
    return out
