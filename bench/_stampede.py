"""Stampede: many concurrent GetProject calls of one cold key, and the database loads.

Each round creates a fresh project (its key was never read, so it is cold), builds all
``fanout`` GetProject calls before yielding to the event loop (grpc.aio schedules each
call when it is created, so every call is on its way before any can complete), gathers
them, checks every answer is that project, and counts database loads as the change of
``agentic_origin_loads_total{resource="project"}`` on the cached API server. The
sidecar's own counters (lease waits, lease-wait timeouts, origin-load answers) are read
around the round through its Stats RPC to say *why* a round loaded more than once.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc
from agentic.projects.v1 import projects_pb2, projects_pb2_grpc

from tests._identity import authorized_aio_channel

__all__ = ["StampedeRound", "origin_loads", "run_stampede"]

_ORIGIN_LOADS = "agentic_origin_loads_total"
_CALL_TIMEOUT_SECONDS = 10.0
# No proxy, whatever the environment says: the scrape must stay on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class StampedeRound:
    """What one stampede did."""

    fanout: int
    correct: int
    """Calls that returned exactly the created project."""
    origin_loads: int
    """Database loads on the API server (the target is 1)."""
    seconds: float
    sidecar_lease_waits: int
    sidecar_lease_wait_timeouts: int
    sidecar_load_answers: int
    """Gets the sidecar answered LOAD or LOAD_NO_FILL."""
    errors: dict[str, int] = field(default_factory=dict)
    """Failed calls by status code."""


def origin_loads(metrics_port: int, resource: str = "project") -> int:
    """Current ``agentic_origin_loads_total{resource=...}`` of an API server (0 if unset)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with _OPENER.open(url, timeout=5) as response:
        text = response.read().decode()
    label = f'resource="{resource}"'
    for line in text.splitlines():
        if line.startswith(_ORIGIN_LOADS + "{") and label in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0  # a labelled counter appears only after its first increment


async def _sidecar_counts(stub: Any) -> tuple[int, int, int]:
    stats = await stub.Stats(cache_pb2.StatsRequest(), timeout=5.0)
    for ns in stats.namespaces:
        if ns.namespace == "projects":
            return int(ns.lease_waits), int(ns.lease_wait_timeouts), int(ns.origin_loads)
    return 0, 0, 0


async def run_stampede(
    *,
    api_address: str,
    metrics_port: int,
    sidecar_address: str,
    rounds: int,
    fanout: int,
    time_limit_seconds: float,
) -> list[StampedeRound]:
    """Run up to ``rounds`` stampedes of ``fanout`` calls, stopping at the time limit."""
    deadline = time.monotonic() + time_limit_seconds
    results: list[StampedeRound] = []
    async with (
        authorized_aio_channel(api_address) as api_channel,
        grpc.aio.insecure_channel(sidecar_address) as sidecar_channel,
    ):
        projects = projects_pb2_grpc.ProjectServiceStub(api_channel)
        sidecar = cache_pb2_grpc.CacheServiceStub(sidecar_channel)
        for number in range(rounds):
            if time.monotonic() > deadline:
                break
            created = await projects.CreateProject(
                projects_pb2.CreateProjectRequest(
                    project=projects_pb2.Project(
                        name=f"stampede-{number}-{uuid.uuid4().hex[:8]}", owner_id="bench"
                    )
                ),
                timeout=_CALL_TIMEOUT_SECONDS,
            )
            project = created.project
            request = projects_pb2.GetProjectRequest(id=project.id)
            loads_before = await asyncio.to_thread(origin_loads, metrics_port)
            waits0, timeouts0, answers0 = await _sidecar_counts(sidecar)
            start = time.perf_counter()
            # All calls exist (and are scheduled) before the first await below.
            calls = [
                projects.GetProject(request, timeout=_CALL_TIMEOUT_SECONDS) for _ in range(fanout)
            ]
            replies = await asyncio.gather(*calls, return_exceptions=True)
            seconds = time.perf_counter() - start
            loads_after = await asyncio.to_thread(origin_loads, metrics_port)
            waits1, timeouts1, answers1 = await _sidecar_counts(sidecar)
            errors: Counter[str] = Counter()
            correct = 0
            for reply in replies:
                if isinstance(reply, grpc.aio.AioRpcError):
                    errors[reply.code().name] += 1
                elif isinstance(reply, BaseException):
                    errors[type(reply).__name__] += 1
                elif reply.project == project:
                    correct += 1
                else:
                    errors["WRONG_PROJECT"] += 1
            results.append(
                StampedeRound(
                    fanout=fanout,
                    correct=correct,
                    origin_loads=loads_after - loads_before,
                    seconds=seconds,
                    sidecar_lease_waits=waits1 - waits0,
                    sidecar_lease_wait_timeouts=timeouts1 - timeouts0,
                    sidecar_load_answers=answers1 - answers0,
                    errors=dict(errors),
                )
            )
    return results
