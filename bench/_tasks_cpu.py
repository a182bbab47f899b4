"""CPU time of process trees, for the task benchmark's "CPU per operation" and "other load".

A Celery worker is a parent with prefork children that come and go, PostgreSQL a
postmaster with a backend per connection, RabbitMQ one Erlang VM: each is metered as a
tree (the process, its live descendants, and the CPU of descendants it already reaped,
which the kernel adds to the parent's ``cutime``/``cstime``). Linux ``/proc`` only; where
it is unreadable every figure is None and the report says "unknown".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from tests._rabbitmq import listener_pid

__all__ = ["MachineMeter", "TreeMeter", "listener_pid", "tree_cpu_seconds"]

try:
    _TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    _TICKS_PER_SECOND = 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name (which may contain spaces): state is
    # field 3 of proc(5), at offset 0 here; ppid offset 1, utime 11, stime 12, cutime 13,
    # cstime 14.
    return text.rsplit(")", 1)[1].split()


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _own_cpu_seconds(pid: int) -> float | None:
    fields = _stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def tree_cpu_seconds(root: int, children: Mapping[int, list[int]] | None = None) -> float | None:
    """User + system CPU seconds of ``root`` and every descendant, live or reaped."""
    tree = _children_by_parent() if children is None else children
    fields = _stat_fields(root)
    if fields is None:
        return None
    ticks = sum(int(f) for f in fields[11:15])  # own utime, stime + reaped children's
    pending = list(tree.get(root, []))
    seen = {root}
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        child = _stat_fields(pid)
        if child is None:
            continue  # exited meanwhile: its parent's cutime has it once reaped
        # A live descendant's own time; its reaped children are in its cutime, and its
        # live ones are visited in turn.
        ticks += int(child[11]) + int(child[12]) + int(child[13]) + int(child[14])
        pending.extend(tree.get(pid, []))
    return ticks / _TICKS_PER_SECOND


class TreeMeter:
    """CPU seconds each named process tree spends between start() and stop()."""

    def __init__(
        self, roots: Mapping[str, int | None], *, alone: frozenset[str] = frozenset()
    ) -> None:
        self._roots = {role: pid for role, pid in roots.items() if pid is not None}
        # Roles metered as the process alone (all its threads), not its tree: the
        # benchmark process is the client, and every server and worker is its child.
        self._alone = alone
        self._begin: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        """CPU seconds by role over the last start()/stop() window."""

    def _read(self) -> dict[str, float]:
        children = _children_by_parent()
        values: dict[str, float] = {}
        for role, pid in self._roots.items():
            value = (
                _own_cpu_seconds(pid) if role in self._alone else tree_cpu_seconds(pid, children)
            )
            if value is not None:
                values[role] = value
        return values

    def start(self) -> None:
        """Take the starting readings."""
        self._begin = self._read()

    def stop(self) -> dict[str, float]:
        """CPU seconds by role since start() (also kept in ``seconds``)."""
        end = self._read()
        self.seconds = {
            role: max(0.0, end[role] - begin) for role, begin in self._begin.items() if role in end
        }
        return self.seconds


def _machine_busy_seconds() -> float | None:
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...; guest time is already in user.
    ticks = [int(x) for x in first[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICKS_PER_SECOND


class MachineMeter:
    """Busy CPU seconds of the whole machine over a window, beside what ``ours`` used."""

    def __init__(self, ours: TreeMeter) -> None:
        self._ours = ours
        self._busy: float | None = None
        self.busy_seconds: float | None = None
        """Every CPU's non-idle time in the window; None when /proc is unreadable."""

    def start(self) -> None:
        """Open the window."""
        self._busy = _machine_busy_seconds()
        self._ours.start()

    def stop(self) -> dict[str, float]:
        """Close the window; CPU seconds of our trees by role."""
        ours = self._ours.stop()
        busy = _machine_busy_seconds()
        if self._busy is not None and busy is not None:
            self.busy_seconds = busy - self._busy
        return ours
