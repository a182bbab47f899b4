"""core.serving.tune_malloc, in a fresh interpreter each: what it changes is the process's
malloc, so each case measures page faults in a process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "confstr") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""),
    reason="tune_malloc sets glibc's malloc only",
)

# Allocate and free two 1 MiB buffers at a time, as the Read path does per chunk (the
# message and its serialized copy), and count the page faults per round.
_PROBE = """
import json, os, resource, sys
from core.serving import tune_malloc
tuning = tune_malloc(os.environ) if sys.argv[1] == "tune" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    a = bytes(1 << 20); b = bytearray(a); del a, b
start = faults()
for _ in range(50):
    a = bytes(1 << 20); b = bytearray(a); del a, b
print(json.dumps({
    "faults_per_round": (faults() - start) / 50,
    "applied": dict(tuning.applied) if tuning else {},
    "left": list(tuning.left) if tuning else [],
}))
"""


@dataclass(frozen=True)
class Probe:
    faults_per_round: float
    applied: dict[str, int]
    left: list[str]


def probe(mode: str, tunables: str = "") -> Probe:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return Probe(**json.loads(done.stdout))


def test_tuned_malloc_stops_faulting_the_heap_top_in_for_every_chunk() -> None:
    # glibc's own settings: the 2 MiB freed at the heap top go back to the kernel, and
    # the next round faults its 512 pages in again.
    assert probe("none").faults_per_round > 100
    tuned = probe("tune")
    assert tuned.faults_per_round < 10, tuned
    assert tuned.applied == {
        "arena_max": 2,
        "mmap_threshold": 4 * 1024 * 1024,
        "trim_threshold": 16 * 1024 * 1024,
    }


def test_what_glibc_tunables_sets_is_left_alone() -> None:
    # The operator's trim threshold of 128 KiB (glibc's initial one) is kept, and with it
    # the faults; the other two are still set.
    found = probe("tune", "glibc.malloc.trim_threshold=131072:glibc.malloc.mmap_threshold=131072")
    assert found.left == ["mmap_threshold", "trim_threshold"], found
    assert found.applied == {"arena_max": 2}, found
    assert found.faults_per_round > 100, found
