"""The measurement flow of one run over a running Stack."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from agentic.projects.v1 import projects_pb2, projects_pb2_grpc
from pymemcache.client.base import Client

from bench._bare import METHOD, key_for
from bench._cpu import CpuMeter
from bench._report import CPU_ROLES, Check, Ratio, Row
from bench._stack import Stack
from bench._stampede import StampedeRound, origin_loads, run_stampede
from devtools.measure import (
    Errors,
    Throughput,
    sample_alternating,
    sample_async,
    sample_sync,
    summarize,
    throughput_async,
    throughput_threads,
)
from tests._identity import authorized_aio_channel

__all__ = ["Plan", "Results", "measure"]

_CALL_TIMEOUT_SECONDS = 5.0
_KEYS = 16
"""Projects (cache keys) the measured calls rotate over."""
# Project text sized like a real one: well under the sidecar's 1 KiB compression
# threshold, so neither path spends time in zlib.
_DESCRIPTION = (
    "Benchmark project of the read path: a realistic description of a few sentences that "
    "says what the project is for, who works on it and where its tasks come from, so the "
    "cached value has the size of a typical project rather than of an empty one."
)

# Targets of the read path (see docs/benchmarks.md).
HIT_OVER_BARE_P50_MAX = 1.25
HIT_OVER_BARE_THROUGHPUT_MIN = 0.8
STAMPEDE_LOADS = 1
# Session idle tracking must stay off the hot path (its write is in the background).
SESSIONS_OVER_UNTRACKED_P50_MAX = 1.05


@dataclass(frozen=True)
class Plan:
    """How much to measure; every figure is also bounded by its time limit."""

    latency_calls: int = 2000
    latency_warmup: int = 300
    throughput_calls: int = 5000
    throughput_warmup: int = 500
    concurrency: int = 16
    passes: int = 4
    """Interleaved passes the calls of each row are split into."""
    row_time_limit_seconds: float = 12.0
    """Per row and kind (latency, throughput), over all passes."""
    stampede_rounds: int = 5
    stampede_fanout: int = 500
    stampede_time_limit_seconds: float = 60.0

    def describe(self) -> str:
        """One line for the report."""
        return (
            f"latency {self.latency_calls} sequential calls per row after "
            f"{self.latency_warmup} warm-up calls; throughput {self.throughput_calls} calls "
            f"with {self.concurrency} in flight after {self.throughput_warmup} warm-up "
            f"calls; both in {self.passes} interleaved passes, each row at most "
            f"{self.row_time_limit_seconds:.0f} s per kind; stampede {self.stampede_rounds} "
            f"rounds of {self.stampede_fanout} concurrent calls"
        )


@dataclass(frozen=True)
class Results:
    """What measure() found, ready for the report."""

    rows: list[Row]
    ratios: list[Ratio]
    checks: list[Check]
    stampede: list[StampedeRound]
    sizes: str
    sanity: list[str]


@dataclass
class _Subject:
    """A path being measured and what has been measured of it so far."""

    key: str
    label: str
    path: str
    cpu: CpuMeter
    call: Callable[[], Awaitable[object]] | None = None
    sync_call: Callable[[], object] | None = None
    make_sync_call: Callable[[], Callable[[], object]] | None = None
    samples: list[int] = field(default_factory=list)
    throughput: Throughput | None = None
    errors: Errors = field(default_factory=Counter)


def _memcached_client(port: int) -> Client:
    return Client(("127.0.0.1", port), connect_timeout=1.0, timeout=1.0, no_delay=True)


async def _sample(subject: _Subject, plan: Plan, first: bool) -> None:
    calls = max(1, plan.latency_calls // plan.passes)
    warmup = plan.latency_warmup if first else 20
    limit = plan.row_time_limit_seconds / plan.passes
    if subject.call is not None:
        samples = await sample_async(
            subject.call, subject.errors, calls=calls, warmup=warmup, time_limit_seconds=limit
        )
    else:
        assert subject.sync_call is not None
        samples = sample_sync(
            subject.sync_call, subject.errors, calls=calls, warmup=warmup, time_limit_seconds=limit
        )
    subject.samples += samples


async def _burst(subject: _Subject, plan: Plan, calls: int) -> Throughput:
    limit = plan.row_time_limit_seconds / plan.passes
    if subject.call is not None:
        return await throughput_async(
            subject.call,
            subject.errors,
            calls=calls,
            concurrency=plan.concurrency,
            warmup=0,
            time_limit_seconds=limit,
        )
    assert subject.make_sync_call is not None
    return await asyncio.to_thread(
        throughput_threads,
        subject.make_sync_call,
        subject.errors,
        calls=calls,
        concurrency=plan.concurrency,
        warmup=0,
        time_limit_seconds=limit,
    )


async def _sample_pair(pair: tuple[_Subject, _Subject], plan: Plan, first: bool) -> None:
    """Latency of two rows whose ratio is a target, call by call in alternation."""
    a, b = pair
    assert a.call is not None
    assert b.call is not None
    samples = await sample_alternating(
        (a.call, b.call),
        (a.errors, b.errors),
        rounds=max(1, plan.latency_calls // plan.passes),
        warmup=plan.latency_warmup if first else 20,
        time_limit_seconds=2 * plan.row_time_limit_seconds / plan.passes,
    )
    a.samples += samples[0]
    b.samples += samples[1]


async def _throughput(subject: _Subject, plan: Plan, first: bool) -> None:
    # The warm-up burst runs outside the CPU meter, so CPU per call counts measured calls.
    await _burst(subject, plan, plan.throughput_warmup if first else plan.concurrency * 4)
    subject.cpu.start()
    figure = await _burst(subject, plan, max(1, plan.throughput_calls // plan.passes))
    subject.cpu.stop()
    subject.throughput = figure if subject.throughput is None else subject.throughput + figure


async def _create_project(stub: Any) -> projects_pb2.Project:
    reply = await stub.CreateProject(
        projects_pb2.CreateProjectRequest(
            project=projects_pb2.Project(
                name=f"bench-read-path-{uuid.uuid4().hex[:8]}",
                description=_DESCRIPTION,
                owner_id="bench@agentic",
            )
        ),
        timeout=_CALL_TIMEOUT_SECONDS,
    )
    project: projects_pb2.Project = reply.project
    return project


def _ratios(row: dict[str, Row]) -> list[Ratio]:
    hit, bare, on_loop = row["hit"], row["bare"], row["bare_loop"]
    direct, pg, one_hop = row["direct"], row["uncached"], row["one_hop"]
    p50 = hit.latency.p50_us / bare.latency.p50_us
    tput = hit.throughput.per_second / bare.throughput.per_second
    pg_ratio = pg.latency.p50_us / hit.latency.p50_us
    tracked = hit.latency.p50_us / row["hit_untracked"].latency.p50_us
    return [
        Ratio(
            "hit p50 / hit with session idle tracking off p50",
            tracked,
            f"<= {SESSIONS_OVER_UNTRACKED_P50_MAX}",
            tracked <= SESSIONS_OVER_UNTRACKED_P50_MAX,
        ),
        Ratio(
            "hit p50 / bare chain (thread) p50",
            p50,
            f"<= {HIT_OVER_BARE_P50_MAX}",
            p50 <= HIT_OVER_BARE_P50_MAX,
        ),
        Ratio(
            "hit calls/s / bare chain (thread) calls/s",
            tput,
            f">= {HIT_OVER_BARE_THROUGHPUT_MIN}",
            tput >= HIT_OVER_BARE_THROUGHPUT_MIN,
        ),
        # One sequential idle read does not show what a cache is for (issue 17): the
        # reads-under-load section carries the cached-against-uncached targets.
        Ratio("scale: uncached PostgreSQL p50 / hit p50 (sequential, idle)", pg_ratio),
        Ratio("hit p50 / bare chain (on loop) p50", hit.latency.p50_us / on_loop.latency.p50_us),
        Ratio(
            "hit calls/s / bare chain (on loop) calls/s",
            hit.throughput.per_second / on_loop.throughput.per_second,
        ),
        Ratio(
            "uncached PostgreSQL p50 / bare one hop p50",
            pg.latency.p50_us / one_hop.latency.p50_us,
        ),
        Ratio("hit p50 / direct pymemcache p50", hit.latency.p50_us / direct.latency.p50_us),
        # The sidecar's default transport beside the TCP the rows above use: informational.
        Ratio(
            "hit over the Unix socket p50 / hit over loopback TCP p50",
            row["hit_uds"].latency.p50_us / hit.latency.p50_us,
        ),
        Ratio(
            "hit over the Unix socket calls/s / hit over loopback TCP calls/s",
            row["hit_uds"].throughput.per_second / hit.throughput.per_second,
        ),
    ]


async def measure(stack: Stack, plan: Plan, progress: Callable[[str], None]) -> Results:
    """Measure every row, then the stampede; see docs/benchmarks.md for the method."""
    # Client channels ignore proxy settings: all traffic stays on loopback.
    options = [("grpc.enable_http_proxy", 0)]
    async with (
        authorized_aio_channel(stack.cached_api.address, options=options) as cached_ch,
        authorized_aio_channel(stack.uds_cached_api.address, options=options) as uds_ch,
        authorized_aio_channel(stack.uncached_api.address, options=options) as uncached_ch,
        authorized_aio_channel(stack.untracked_api.address, options=options) as untracked_ch,
        grpc.aio.insecure_channel(stack.bare_thread.address, options=options) as thread_ch,
        grpc.aio.insecure_channel(stack.bare_loop.address, options=options) as loop_ch,
        grpc.aio.insecure_channel(stack.bare_thread_hop2.address, options=options) as hop2_ch,
    ):
        cached = projects_pb2_grpc.ProjectServiceStub(cached_ch)
        uds_cached = projects_pb2_grpc.ProjectServiceStub(uds_ch)
        uncached = projects_pb2_grpc.ProjectServiceStub(uncached_ch)
        untracked = projects_pb2_grpc.ProjectServiceStub(untracked_ch)
        projects = [await _create_project(cached) for _ in range(_KEYS)]
        requests = [projects_pb2.GetProjectRequest(id=p.id) for p in projects]
        responses = [projects_pb2.GetProjectResponse(project=p) for p in projects]

        # The first read loads and fills the cache; the uncached server sees the same rows.
        for request, project in zip(requests, projects, strict=True):
            for stub in (cached, uds_cached, uncached, untracked):
                got = await stub.GetProject(request, timeout=_CALL_TIMEOUT_SECONDS)
                if got.project != project:
                    raise RuntimeError(f"GetProject returned {got.project} instead of {project}")

        # The bare chains read the same bytes the client gets from the API server.
        keys = [key_for(r.SerializeToString()) for r in requests]
        memcached = _memcached_client(stack.memcached_port)
        for key, response in zip(keys, responses, strict=True):
            if not memcached.set(key, response.SerializeToString(), noreply=False):
                raise RuntimeError("memcached refused the bare chain's value")
        memcached.close()

        def bare(channel: Any) -> Any:
            return channel.unary_unary(
                METHOD,
                request_serializer=projects_pb2.GetProjectRequest.SerializeToString,
                response_deserializer=projects_pb2.GetProjectResponse.FromString,
                _registered_method=True,  # as the generated stubs do
            )

        bare_thread, bare_loop, one_hop = bare(thread_ch), bare(loop_ch), bare(hop2_ch)
        for chain in (bare_thread, bare_loop, one_hop):
            for request, response in zip(requests, responses, strict=True):
                if await chain(request, timeout=_CALL_TIMEOUT_SECONDS) != response:
                    raise RuntimeError("a bare chain returned another value")

        def rotating(method: Any) -> Callable[[], Awaitable[object]]:
            # Calls cycle over the projects: a server that coalesced concurrent reads of
            # one key would otherwise be measured on a workload that favours it.
            cycle = itertools.cycle(requests)
            return lambda: method(next(cycle), timeout=_CALL_TIMEOUT_SECONDS)

        def direct_client() -> Callable[[], object]:
            client = _memcached_client(stack.memcached_port)
            cycle = itertools.cycle(keys)
            return lambda: client.get(next(cycle))

        client, mc = os.getpid(), stack.memcached_pid
        front, cache, store = CPU_ROLES[1:4]

        def meter(front_pid: int | None, cache_pid: int | None, with_mc: bool) -> CpuMeter:
            return CpuMeter(
                {
                    "client": client,
                    front: front_pid,
                    cache: cache_pid,
                    store: mc if with_mc else None,
                }
            )

        subjects = [
            _Subject(
                "hit",
                "GetProject, cache hit",
                "client -> API server -> sidecar -> memcached",
                meter(stack.cached_api.process.pid, stack.sidecar.process.pid, True),
                call=rotating(cached.GetProject),
            ),
            _Subject(
                "hit_uds",
                "GetProject, cache hit (sidecar on its Unix socket)",
                "client -> API server -> sidecar (unix:) -> memcached",
                meter(stack.uds_cached_api.process.pid, stack.uds_sidecar.process.pid, True),
                call=rotating(uds_cached.GetProject),
            ),
            _Subject(
                "hit_untracked",
                "GetProject, cache hit, session idle tracking off",
                "client -> API server (no idle tracking) -> sidecar -> memcached",
                meter(stack.untracked_api.process.pid, stack.sidecar.process.pid, True),
                call=rotating(untracked.GetProject),
            ),
            _Subject(
                "bare",
                "bare chain (thread)",
                "client -> hop1 -> hop2 -> pymemcache get in a thread",
                meter(stack.bare_thread.process.pid, stack.bare_thread_hop2.process.pid, True),
                call=rotating(bare_thread),
            ),
            _Subject(
                "bare_loop",
                "bare chain (on loop)",
                "client -> hop1 -> hop2 -> pymemcache get on the loop",
                meter(stack.bare_loop.process.pid, stack.bare_loop_hop2.process.pid, True),
                call=rotating(bare_loop),
            ),
            _Subject(
                "one_hop",
                "bare one hop (thread)",
                "client -> hop2 -> pymemcache get in a thread",
                meter(None, stack.bare_thread_hop2.process.pid, True),
                call=rotating(one_hop),
            ),
            _Subject(
                "direct",
                "direct pymemcache get",
                "pymemcache Client -> memcached",
                meter(None, None, True),
                sync_call=direct_client(),
                make_sync_call=direct_client,
            ),
            _Subject(
                "uncached",
                "GetProject, uncached (PostgreSQL)",
                "client -> API server -> PostgreSQL",
                meter(stack.uncached_api.process.pid, None, False),
                call=rotating(uncached.GetProject),
            ),
        ]

        by_key = {subject.key: subject for subject in subjects}
        # Session tracking on and off differ by a few percent at most: their latencies are
        # sampled call by call in alternation (``sample_alternating``), not one after the other.
        tracked_pair = (by_key["hit"], by_key["hit_untracked"])
        cached_loads0 = await asyncio.to_thread(origin_loads, stack.cached_metrics_port)
        uncached_loads0 = await asyncio.to_thread(origin_loads, stack.uncached_metrics_port)
        for number in range(plan.passes):
            first = number == 0
            progress(f"latency pass {number + 1}/{plan.passes}")
            for subject in subjects:
                if subject is tracked_pair[0]:
                    await _sample_pair(tracked_pair, plan, first)
                elif subject not in tracked_pair:
                    await _sample(subject, plan, first)
            progress(f"throughput pass {number + 1}/{plan.passes}")
            for subject in subjects:
                await _throughput(subject, plan, first)
        cached_loads = await asyncio.to_thread(origin_loads, stack.cached_metrics_port)
        uncached_loads = await asyncio.to_thread(origin_loads, stack.uncached_metrics_port)

        # Still the same answers after all that.
        for request, project in zip(requests, projects, strict=True):
            got = await cached.GetProject(request, timeout=_CALL_TIMEOUT_SECONDS)
            if got.project != project:
                raise RuntimeError("the cached API server answered another project after the run")

    rows = []
    for s in subjects:
        assert s.throughput is not None
        calls = max(1, s.throughput.calls)
        cpu = {role: seconds * 1e6 / calls for role, seconds in s.cpu.seconds.items()}
        rows.append(
            Row(s.key, s.label, s.path, summarize(s.samples), s.throughput, dict(s.errors), cpu)
        )
    row = {r.key: r for r in rows}

    progress("stampede")
    stampede = await run_stampede(
        api_address=stack.cached_api.address,
        metrics_port=stack.cached_metrics_port,
        sidecar_address=stack.sidecar.address,
        rounds=plan.stampede_rounds,
        fanout=plan.stampede_fanout,
        time_limit_seconds=plan.stampede_time_limit_seconds,
    )

    loads = [r.origin_loads for r in stampede]
    all_correct = all(r.correct == r.fanout for r in stampede)
    stampede_ok = bool(stampede) and all_correct and all(n == STAMPEDE_LOADS for n in loads)
    checks = [
        Check(
            f"stampede: origin loads per round ({plan.stampede_fanout} concurrent calls)",
            " ".join(str(n) for n in loads) + ("" if all_correct else " (some calls failed)"),
            f"= {STAMPEDE_LOADS} each, all calls correct",
            stampede_ok,
        )
    ]
    sizes = (
        f"{_KEYS} projects read in rotation; a serialized Project is "
        f"{len(projects[0].SerializeToString())} B (the sidecar stores it with a 1-byte tag), "
        f"a GetProjectResponse {len(responses[0].SerializeToString())} B, the value the bare "
        "chains and the direct get read"
    )
    pg = row["uncached"]
    sanity = [
        f"cache-hit row: {cached_loads - cached_loads0} origin loads on the cached API "
        "server while measuring (expected 0: every measured call was a hit)",
        f"uncached row: {uncached_loads - uncached_loads0} origin loads on the uncached API "
        f"server for {pg.latency.calls + pg.throughput.calls} measured calls plus warm-up "
        "(every call read PostgreSQL)",
    ]
    return Results(rows, _ratios(row), checks, stampede, sizes, sanity)
