"""glibc's malloc, set for processes that move bytes in 1 MiB messages and 8 MiB parts.

glibc's defaults cost the API server both memory and speed on the artifact paths:

- Each thread that allocates gets an arena of its own, up to 8 per core, and an arena
  keeps what was freed in it. The S3 store's 8 MiB part buffers, allocated in whichever of
  the object IO threads runs a write, stay resident in each of them: RSS grows by several
  parts per thread, retained free memory, not live data.
- The mmap threshold adapts to the largest mmapped chunk freed so far (1 MiB messages: a
  little over 1 MiB), and the heap top is trimmed once twice that is free. A server that
  frees a chunk's two 1 MiB buffers (the message, its serialized copy) at once gives the
  heap top back to the kernel after every chunk and faults it in again, zero-filled, for
  the next: some 500 page faults per MiB sent, half the download's speed.

``tune_malloc`` therefore sets, with ``mallopt`` at the start of the process (before any
thread allocates, so that every later arena obeys the limit):

=================  =============  ===========================================================
parameter          value          effect
=================  =============  ===========================================================
arena_max          2              two arenas serve every thread
mmap_threshold     4 MiB          up to 4 MiB come from the heap (a part is mmapped, and
                                  given back when freed); fixed, no longer adaptive
trim_threshold     16 MiB         the heap top goes back to the kernel only past 16 MiB free
=================  =============  ===========================================================

These are the figures the artifact benchmark measured (docs/benchmarks.md). The
environment stays in charge: a parameter that ``GLIBC_TUNABLES`` sets
(``glibc.malloc.arena_max``, ``glibc.malloc.mmap_threshold``,
``glibc.malloc.trim_threshold``) is left as glibc read it, so an operator can change or
undo any of them without a code change. On a C library other than glibc (musl, macOS)
nothing is done.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["MALLOC_DEFAULTS", "MallocTuning", "tune_malloc"]

log = logging.getLogger(__name__)

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_PARAMETERS = {
    "arena_max": _M_ARENA_MAX,
    "mmap_threshold": _M_MMAP_THRESHOLD,
    "trim_threshold": _M_TRIM_THRESHOLD,
}

MALLOC_DEFAULTS: Mapping[str, int] = {
    "arena_max": 2,
    "mmap_threshold": 4 * 1024 * 1024,
    "trim_threshold": 16 * 1024 * 1024,
}
"""What ``tune_malloc`` sets, by the name of the glibc tunable (``glibc.malloc.<name>``)."""


@dataclass(frozen=True, slots=True)
class MallocTuning:
    """What ``tune_malloc`` did."""

    applied: Mapping[str, int]
    """Parameters set, and their values."""
    left: tuple[str, ...]
    """Parameters left alone because ``GLIBC_TUNABLES`` sets them."""
    skipped: str
    """Why nothing was set at all ("" when something may have been)."""


def _glibc() -> ctypes.CDLL | None:
    try:
        os.confstr("CS_GNU_LIBC_VERSION")  # only glibc knows this name
    except (ValueError, OSError, AttributeError):
        return None
    return ctypes.CDLL(None)


def _set_by_environment(tunables: str) -> set[str]:
    """The malloc parameters a ``GLIBC_TUNABLES`` value (``name=value:name=value``) sets."""
    names = set()
    for item in tunables.split(":"):
        name = item.partition("=")[0].strip()
        if name.startswith("glibc.malloc."):
            names.add(name.removeprefix("glibc.malloc."))
    return names


def tune_malloc(environ: Mapping[str, str]) -> MallocTuning:
    """Set glibc's malloc parameters for this process (see the module docstring), except
    those ``environ``'s ``GLIBC_TUNABLES`` sets; logs what it did. Call it first thing in
    a process's entry point: an arena created before it is not limited."""
    libc = _glibc()
    if libc is None:
        return MallocTuning({}, (), "not glibc")
    taken = _set_by_environment(environ.get("GLIBC_TUNABLES", ""))
    applied: dict[str, int] = {}
    for name, value in MALLOC_DEFAULTS.items():
        if name in taken:
            continue
        if libc.mallopt(ctypes.c_int(_PARAMETERS[name]), ctypes.c_int(value)) != 1:
            log.warning("mallopt(%s, %d) was refused; glibc's own setting stays", name, value)
            continue
        applied[name] = value
    left = tuple(n for n in MALLOC_DEFAULTS if n in taken)
    log.info(
        "malloc: %s%s",
        ", ".join(f"{n}={v}" for n, v in applied.items()) or "nothing set",
        f" ({', '.join(left)} as GLIBC_TUNABLES sets)" if left else "",
    )
    return MallocTuning(applied, left, "")
