"""The traffic of the reads-under-load section, and what it saw: Zipf reads, some updates.

Each call picks a project by Zipf popularity (rank k drawn with weight 1/k^s over the
seeded projects; the CDF is precomputed and bisected, the PRNG seeded, so every variant
gets the same sequence), then a GetProject, or with probability ``update_fraction`` an
unconditional UpdateProject of its description. Calls rotate over several client
channels, each its own HTTP/2 connection (a local subchannel pool: gRPC would otherwise
share one connection between channels to the same address).

Stale reads: every acknowledged update records (project, acknowledgement time, the
update_time it returned), every successful read (project, its start time, the
update_time it returned). A read is stale when it started after some update of its
project was acknowledged and returned an older update_time: the server answered with a
value older than a write it had already confirmed. update_time is the order because the
etag is opaque (the proto says to compare it, never parse it) and a project's
update_time grows with each update. Two concurrent unconditional updates of one project
may meet the store's optimistic check (ABORTED): those are counted as write conflicts,
the domain's answer, not as errors.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from agentic.projects.v1 import projects_pb2
from google.protobuf import field_mask_pb2

__all__ = ["Observations", "Traffic", "Zipf"]

_CALL_TIMEOUT_SECONDS = 2.0
_UPDATE_MASK = field_mask_pb2.FieldMask(paths=["description"])


class Zipf:
    """Ranks 0..n-1 drawn with probability proportional to 1/(rank+1)^s."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        weights = [1.0 / (k**s) for k in range(1, n + 1)]
        total = sum(weights)
        self._cdf = list(itertools.accumulate(w / total for w in weights))
        self._rng = rng

    def draw(self) -> int:
        """One rank (0 is the most popular)."""
        # min(): accumulated rounding can leave the last CDF entry a hair below 1.0.
        return min(bisect.bisect_left(self._cdf, self._rng.random()), len(self._cdf) - 1)


@dataclass
class Observations:
    """What one run's calls returned (times are ``perf_counter_ns`` of this process)."""

    reads: list[tuple[int, int, int]] = field(default_factory=list)
    """(project rank, start time, update_time returned in ns) of each successful read."""
    updates: list[tuple[int, int, int]] = field(default_factory=list)
    """(project rank, acknowledgement time, update_time returned in ns) of each update."""
    conflicts: int = 0
    """Updates the store refused (ABORTED) because another one won the same version."""

    def stale_reads(self) -> int:
        """Reads that returned a value older than an update acknowledged before they began."""
        acked: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for rank, ack_ns, version_ns in self.updates:
            acked[rank].append((ack_ns, version_ns))
        # Per project: acknowledgement times in order, and the newest version acked by each.
        index: dict[int, tuple[list[int], list[int]]] = {}
        for rank, pairs in acked.items():
            pairs.sort()
            newest = list(itertools.accumulate((v for _, v in pairs), max))
            index[rank] = ([t for t, _ in pairs], newest)
        stale = 0
        for rank, start_ns, version_ns in self.reads:
            if rank not in index:
                continue
            times, newest = index[rank]
            before = bisect.bisect_left(times, start_ns)  # acks strictly before the start
            if before and version_ns < newest[before - 1]:
                stale += 1
        return stale


class Traffic:
    """The mixed call of one variant: a Zipf-chosen project, read or updated."""

    def __init__(
        self,
        stubs: Sequence[Any],
        project_ids: Sequence[str],
        *,
        zipf_s: float,
        update_fraction: float,
        seed: int,
    ) -> None:
        rng = random.Random(seed)
        self._rng = rng
        self._zipf = Zipf(len(project_ids), zipf_s, rng)
        self._stubs = itertools.cycle(stubs)
        self._ids = project_ids
        self._update_fraction = update_fraction
        self._updates = itertools.count()
        self.seen = Observations()

    def restart(self) -> Observations:
        """Begin a new run's observations; return the previous run's."""
        done, self.seen = self.seen, Observations()
        return done

    async def call(self) -> None:
        """One call of the mix (raises what the server answered, except write conflicts)."""
        rank = self._zipf.draw()
        stub = next(self._stubs)
        project_id = self._ids[rank]
        if self._rng.random() < self._update_fraction:
            await self._update(stub, rank, project_id)
            return
        start = time.perf_counter_ns()
        reply = await stub.GetProject(
            projects_pb2.GetProjectRequest(id=project_id), timeout=_CALL_TIMEOUT_SECONDS
        )
        self.seen.reads.append((rank, start, reply.project.update_time.ToNanoseconds()))

    async def _update(self, stub: Any, rank: int, project_id: str) -> None:
        request = projects_pb2.UpdateProjectRequest(
            id=project_id,
            project=projects_pb2.Project(
                description=f"reads under load, update {next(self._updates)}"
            ),
            update_mask=_UPDATE_MASK,
        )
        try:
            reply = await stub.UpdateProject(request, timeout=_CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ABORTED:
                raise
            self.seen.conflicts += 1
            return
        acked = time.perf_counter_ns()
        self.seen.updates.append((rank, acked, reply.project.update_time.ToNanoseconds()))
