"""CPU time of processes, to say where a call's CPU goes (Linux ``/proc``; else nothing).

On a machine with few cores, throughput is bounded by the CPU all processes of a path
spend per call, so "CPU µs per call" per process explains a throughput figure better
than any profile: it is measured over the same calls, with every thread counted
(gRPC's poller thread, executor threads), and without sampling bias.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["CpuMeter", "OthersMeter", "cpu_seconds"]

try:
    _TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    _TICKS_PER_SECOND = 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name (which may contain spaces); utime
    # and stime are fields 14 and 15 of proc(5), here at offsets 11 and 12.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


class CpuMeter:
    """Accumulates the CPU seconds named processes spend between start() and stop()."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self._pids = {role: pid for role, pid in pids.items() if pid is not None}
        self._begin: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def start(self) -> None:
        """Take the starting readings."""
        self._begin = {}
        for role, pid in self._pids.items():
            value = cpu_seconds(pid)
            if value is not None:
                self._begin[role] = value

    def stop(self) -> None:
        """Add the CPU spent since start() to ``seconds``."""
        for role, begin in self._begin.items():
            value = cpu_seconds(self._pids[role])
            if value is not None:
                self.seconds[role] = self.seconds.get(role, 0.0) + value - begin


def _machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs spent not idle since boot (``/proc/stat``), None if unreadable."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...; guest time is already in user.
    ticks = [int(x) for x in first[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICKS_PER_SECOND


class OthersMeter:
    """CPU that processes other than ours used over a window: the machine's busy time
    minus what our processes used. Says whether something else competed for the CPUs."""

    def __init__(self, pids: list[int]) -> None:
        self._ours = CpuMeter({str(pid): pid for pid in pids})
        self._busy: float | None = None
        self.others_seconds: float | None = None
        """CPU seconds used by other processes in the window; None when unknown."""

    def start(self) -> None:
        """Open the window."""
        self._busy = _machine_busy_seconds()
        self._ours.start()

    def stop(self) -> None:
        """Close the window and compute ``others_seconds``."""
        self._ours.stop()
        busy = _machine_busy_seconds()
        if self._busy is None or busy is None:
            return
        ours = sum(self._ours.seconds.values())
        self.others_seconds = max(0.0, busy - self._busy - ours)
