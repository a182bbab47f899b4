"""Peak resident memory of a server process over one transfer (Linux ``/proc``; else nothing).

``resident_mib`` is a process's ``VmRSS`` now: taken once while it is idle, before its
first measured transfer, it is the baseline growth is measured from. Around a transfer,
``PeakMeter`` first writes ``5`` to ``/proc/<pid>/clear_refs``, which resets the process's
``VmHWM`` (the kernel's high-water mark of RSS) to its current RSS, so the ``VmHWM`` read
afterwards is the peak of this transfer alone, not of the start-up or an earlier row. A
thread also samples ``VmRSS`` every 10 ms, which is the figure when the reset is refused.
``minor_faults`` counts the pages a process touched fresh: a server that hands memory back
to the kernel after every chunk and takes it again for the next shows it there.
"""

from __future__ import annotations

import threading
from pathlib import Path

__all__ = ["PeakMeter", "minor_faults", "resident_mib"]

_SAMPLE_SECONDS = 0.01


def _status_kib(pid: int, field: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def resident_mib(pid: int) -> float | None:
    """The process's resident memory now (VmRSS), None when unreadable."""
    value = _status_kib(pid, "VmRSS")
    return None if value is None else value / 1024


def minor_faults(pid: int) -> int | None:
    """Minor page faults of the process so far (all threads; ``/proc/<pid>/stat`` field 10):
    each is a page of memory touched for the first time since it was mapped."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name; minflt is field 10 of proc(5).
    return int(text.rsplit(")", 1)[1].split()[7])


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakMeter:
    """``with PeakMeter(pid) as meter:`` around a transfer; then ``meter.peak_mib``."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self._sampled = 0
        self._thread: threading.Thread | None = None
        self._exact = False
        self.peak_mib: float | None = None
        """The peak RSS of the block, once it ended (None when /proc is unreadable)."""
        self.exact = False
        """The peak is the kernel's VmHWM, not only sampled."""

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE_SECONDS):
            value = _status_kib(self._pid, "VmRSS")
            if value is not None:
                self._sampled = max(self._sampled, value)

    def __enter__(self) -> PeakMeter:
        self._sampled = _status_kib(self._pid, "VmRSS") or 0
        self._exact = _reset_peak(self._pid)
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
        hwm = _status_kib(self._pid, "VmHWM") if self._exact else None
        peak = max(self._sampled, hwm or 0)
        if peak:
            self.peak_mib = peak / 1024
            self.exact = hwm is not None
