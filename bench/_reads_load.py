"""Reads under load, the seeds' way: three servers on one database at fixed offered rates.

The flow (issue 17, row 1), every loop bounded in calls and time:

1. Seed ``projects`` projects through the uncached API server (CreateProject, several in
   flight).
2. Capacity: the uncached server (a) under the mixed traffic (``bench._reads_workload``)
   in a closed loop of ``capacity_in_flight`` calls for ``capacity_seconds``; completed
   calls per second.
3. For each variant, (a) no cache, (b) the hand-written cache-aside
   (``bench._cache_aside``, started here on the stack's memcached), (c) this project's
   server with its sidecar (on the sidecar's default transport, the Unix socket): for
   a cached variant a warm-up that reads every project once (the steady state of a
   long-running server, where the cache's TTL outlasts the time between reads of even
   the tail's projects; the seeding just wrote every row, so PostgreSQL's buffers are
   warm for (a) already), then for each fraction of the capacity (60%, 80%)
   ``warmup_seconds`` of the load itself and a measured open-loop run of
   ``run_seconds`` at that offered rate (``bench._tasks_load.open_loop``: calls start
   on schedule whatever the earlier ones do, each timed from its scheduled start).
   Database counters (``bench._reads_counters``) are read around each measured run.

Variants run one after the other, not interleaved, because their caches are not
coherent with each other: an update through (a) would leave (b)'s and (c)'s cached
values old. Each variant's traffic uses the same seed, so all see the same sequence.

``python -m bench._reads_load [--quick] [--markdown]`` runs the section alone on its own
stack and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from agentic.projects.v1 import projects_pb2, projects_pb2_grpc

from bench._cache_aside import MEMCACHED_ENV
from bench._reads_counters import read_counters
from bench._reads_load_report import ReadsLoadFigures, RunFigures, Variant, render
from bench._reads_workload import Traffic
from bench._report import Section
from bench._stack import Stack, api_env, running_stack
from bench._tasks_load import closed_loop, open_loop
from devtools.measure import Errors, summarize
from tests._identity import auth_env, authorized_aio_channel, dev_keys
from tests._processes import Service, start_service

__all__ = ["QUICK", "ReadsLoadPlan", "measure_reads_load", "reads_load_section"]

TITLE = "Reads under load, the seeds' way"
_DESCRIPTION = (
    "Project of the reads-under-load benchmark: a description of a few sentences, the "
    "size of a typical project's, so a cached value weighs what a real one does."
)
_CALL_TIMEOUT_SECONDS = 5.0
_START_TIMEOUT_SECONDS = 60.0
# Calls still in flight when a schedule ends get this long to finish (then: unfinished).
_DRAIN_SECONDS = 5.0
# A pause between runs, so one run's backlog (at 80% it may have one) is not the next's.
_SETTLE_SECONDS = 1.0


@dataclass(frozen=True)
class ReadsLoadPlan:
    """How much to measure; every phase is also bounded by its own time limit."""

    projects: int = 10_000
    zipf_s: float = 1.0
    update_fraction: float = 0.05
    fractions: tuple[float, ...] = (0.6, 0.8)
    """Offered rates, as fractions of the uncached server's measured capacity."""
    channels: int = 4
    """Client connections per variant."""
    capacity_seconds: float = 6.0
    capacity_in_flight: int = 32
    warmup_seconds: float = 3.0
    run_seconds: float = 25.0
    max_outstanding: int = 256
    """Calls in flight at most; a scheduled call beyond it is skipped (and counted)."""
    seed_in_flight: int = 16
    seed_time_limit_seconds: float = 120.0
    sweep_in_flight: int = 16
    sweep_time_limit_seconds: float = 60.0
    seed: int = 17

    def describe(self) -> str:
        """One line for the report."""
        rates = " and ".join(f"{f:.0%}" for f in self.fractions)
        return (
            f"{self.projects} projects, Zipf s={self.zipf_s}, "
            f"{1 - self.update_fraction:.0%} GetProject / {self.update_fraction:.0%} "
            f"UpdateProject over {self.channels} connections; capacity: closed loop of "
            f"{self.capacity_in_flight} in flight for {self.capacity_seconds:.0f} s on (a); "
            f"per cached variant a read of every project, then at {rates} of capacity "
            f"{self.warmup_seconds:.0f} s warm-up and {self.run_seconds:.0f} s measured "
            f"(open loop, at most {self.max_outstanding} in flight)"
        )


QUICK = ReadsLoadPlan(
    projects=500,
    capacity_seconds=2.0,
    warmup_seconds=1.0,
    run_seconds=3.0,
    seed_time_limit_seconds=30.0,
    sweep_time_limit_seconds=15.0,
)

Progress = Callable[[str], None]


@contextmanager
def _cache_aside_server(stack: Stack, workdir: Path) -> Iterator[Service]:
    """Start variant (b) on the stack's database and memcached; stop it afterwards."""
    env = {
        **api_env(stack.database_url, ""),
        **auth_env(),  # start_service adds these only for the module "server"
        "AGENTIC_OBJECT_STORE_URL": (workdir / "objects").resolve().as_uri(),
        MEMCACHED_ENV: f"127.0.0.1:{stack.memcached_port}",
    }
    service = start_service("bench._cache_aside", env, workdir, timeout=_START_TIMEOUT_SECONDS)
    try:
        yield service
    finally:
        service.stop()


def _channels(address: str, count: int) -> list[grpc.aio.Channel]:
    # A local subchannel pool per channel: each is its own connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    return [authorized_aio_channel(address, options=options) for _ in range(count)]


def _ok(samples: list[int], errors: Errors) -> int:
    return len(samples) - sum(n for name, n in errors.items() if name != "unfinished")


def _errors_text(errors: Errors) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "no errors"


async def _seed(address: str, plan: ReadsLoadPlan, notes: list[str]) -> list[str]:
    """Create the projects through the uncached server; their ids in creation order."""
    tag = uuid.uuid4().hex[:8]
    numbers = itertools.count()
    ids: list[str] = []
    channel = authorized_aio_channel(address)
    stub: Any = projects_pb2_grpc.ProjectServiceStub(channel)

    async def create() -> None:
        project = projects_pb2.Project(
            name=f"reads-load-{tag}-{next(numbers)}",
            description=_DESCRIPTION,
            owner_id="bench@agentic",
        )
        reply = await stub.CreateProject(
            projects_pb2.CreateProjectRequest(project=project), timeout=_CALL_TIMEOUT_SECONDS
        )
        ids.append(reply.project.id)

    errors: Errors = Counter()
    try:
        _samples, seconds = await closed_loop(
            create,
            errors,
            calls=plan.projects,
            in_flight=plan.seed_in_flight,
            time_limit_seconds=plan.seed_time_limit_seconds,
        )
    finally:
        await channel.close()
    notes.append(
        f"Seeding: {len(ids)} of {plan.projects} projects created through (a) in "
        f"{seconds:.1f} s ({_errors_text(errors)})."
    )
    if not ids:
        raise RuntimeError(f"no project could be created: {dict(errors)}")
    return ids


async def _sweep(variant: Variant, stubs: list[Any], ids: list[str], plan: ReadsLoadPlan) -> str:
    """Read every project once (the warm-up that fills a cache); a line saying how it went."""
    pending = iter(ids)
    rotation = itertools.cycle(stubs)
    done = 0

    async def read() -> None:
        nonlocal done
        project_id = next(pending, None)
        if project_id is not None:
            await next(rotation).GetProject(
                projects_pb2.GetProjectRequest(id=project_id), timeout=_CALL_TIMEOUT_SECONDS
            )
            done += 1

    errors: Errors = Counter()
    _samples, seconds = await closed_loop(
        read,
        errors,
        calls=len(ids),
        in_flight=plan.sweep_in_flight,
        time_limit_seconds=plan.sweep_time_limit_seconds,
    )
    cut = " (stopped at its time limit)" if done + sum(errors.values()) < len(ids) else ""
    return (
        f"Warm-up of {variant.label}: {done} of {len(ids)} projects read in {seconds:.1f} s"
        f"{cut} ({_errors_text(errors)})."
    )


def _traffic(stubs: list[Any], ids: list[str], plan: ReadsLoadPlan) -> Traffic:
    return Traffic(
        stubs, ids, zipf_s=plan.zipf_s, update_fraction=plan.update_fraction, seed=plan.seed
    )


async def _capacity(variant: Variant, ids: list[str], plan: ReadsLoadPlan) -> tuple[float, int]:
    """Completed calls per second of the mix on ``variant`` in a closed loop; errors."""
    channels = _channels(variant.address, plan.channels)
    try:
        stubs = [projects_pb2_grpc.ProjectServiceStub(c) for c in channels]
        traffic = _traffic(stubs, ids, plan)
        warm: Errors = Counter()
        await closed_loop(
            traffic.call,
            warm,
            calls=10**7,
            in_flight=plan.capacity_in_flight,
            time_limit_seconds=1.0,
        )
        errors: Errors = Counter()
        samples, seconds = await closed_loop(
            traffic.call,
            errors,
            calls=10**7,  # bounded by the time limit
            in_flight=plan.capacity_in_flight,
            time_limit_seconds=plan.capacity_seconds,
        )
    finally:
        for channel in channels:
            await channel.close()
    ok = _ok(samples, errors)
    return (ok / seconds if seconds > 0 else 0.0), sum(errors.values())


async def _one_run(
    variant: Variant,
    traffic: Traffic,
    database_url: str,
    fraction: float,
    rate: float,
    plan: ReadsLoadPlan,
) -> RunFigures:
    """A warm-up of the load, then the measured open-loop run with counters around it."""
    warm: Errors = Counter()
    await open_loop(
        traffic.call,
        warm,
        per_second=rate,
        seconds=plan.warmup_seconds,
        max_outstanding=plan.max_outstanding,
        time_limit_seconds=_DRAIN_SECONDS,
    )
    before = await asyncio.to_thread(read_counters, database_url, variant.metrics_port)
    traffic.restart()
    errors: Errors = Counter()
    samples, seconds, skipped = await open_loop(
        traffic.call,
        errors,
        per_second=rate,
        seconds=plan.run_seconds,
        max_outstanding=plan.max_outstanding,
        time_limit_seconds=_DRAIN_SECONDS,
    )
    seen = traffic.restart()
    after = await asyncio.to_thread(read_counters, database_url, variant.metrics_port)
    return RunFigures(
        variant=variant,
        fraction=fraction,
        offered_per_second=rate,
        scheduled=max(1, round(rate * plan.run_seconds)),
        latency=summarize(samples) if samples else None,
        seconds=seconds,
        reads=len(seen.reads),
        updates=len(seen.updates),
        conflicts=seen.conflicts,
        errors=errors,
        skipped=skipped,
        db=after - before,
        stale_reads=seen.stale_reads(),
        load_average=os.getloadavg()[0],
    )


async def _variant_runs(
    variant: Variant,
    ids: list[str],
    database_url: str,
    capacity: float,
    plan: ReadsLoadPlan,
    notes: list[str],
    progress: Progress,
) -> list[RunFigures]:
    """The warm-up sweep (cached variants), then one measured run per fraction."""
    channels = _channels(variant.address, plan.channels)
    runs: list[RunFigures] = []
    try:
        stubs = [projects_pb2_grpc.ProjectServiceStub(c) for c in channels]
        if variant.cached:
            notes.append(await _sweep(variant, stubs, ids, plan))
            progress(f"reads under load: {notes[-1]}")
        traffic = _traffic(stubs, ids, plan)
        for fraction in plan.fractions:
            run = await _one_run(
                variant, traffic, database_url, fraction, capacity * fraction, plan
            )
            runs.append(run)
            progress(f"reads under load: {variant.key} at {fraction:.0%}: {run.summary()}")
            await asyncio.sleep(_SETTLE_SECONDS)
    finally:
        for channel in channels:
            await channel.close()
    return runs


async def _measure(
    variants: list[Variant], database_url: str, plan: ReadsLoadPlan, progress: Progress
) -> ReadsLoadFigures:
    clock = time.monotonic()
    notes: list[str] = []
    uncached = variants[0]
    ids = await _seed(uncached.address, plan, notes)
    progress(f"reads under load: {notes[-1]}")
    capacity, capacity_errors = await _capacity(uncached, ids, plan)
    progress(f"reads under load: capacity of (a) {capacity:.0f} calls/s")
    if capacity <= 0:
        raise RuntimeError("the uncached server completed no call in the capacity run")
    runs: list[RunFigures] = []
    for variant in variants:
        runs += await _variant_runs(variant, ids, database_url, capacity, plan, notes, progress)
    return ReadsLoadFigures(
        plan=plan.describe(),
        projects=len(ids),
        capacity_per_second=capacity,
        capacity_errors=capacity_errors,
        fractions=plan.fractions,
        runs=runs,
        notes=notes,
        seconds=time.monotonic() - clock,
    )


def measure_reads_load(
    stack: Stack, workdir: Path, plan: ReadsLoadPlan, progress: Progress
) -> ReadsLoadFigures:
    """Start variant (b) beside the stack's servers, measure all three, stop (b)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with _cache_aside_server(stack, workdir) as aside:
        variants = [
            Variant(
                "a",
                "(a) no cache",
                stack.uncached_api.address,
                stack.uncached_metrics_port,
                cached=False,
            ),
            Variant(
                "b",
                "(b) cache-aside by hand",
                aside.address,
                int(aside.ready["metrics_port"]),
                cached=True,
            ),
            Variant(
                "c",
                "(c) sidecar",
                stack.uds_cached_api.address,
                int(stack.uds_cached_api.ready["metrics_port"]),
                cached=True,
            ),
        ]
        budget = _budget_seconds(plan)
        return asyncio.run(
            asyncio.wait_for(_measure(variants, stack.database_url, plan, progress), budget)
        )


def _budget_seconds(plan: ReadsLoadPlan) -> float:
    """The whole section's time limit: every phase's own bound, summed, plus slack."""
    per_run = plan.warmup_seconds + plan.run_seconds + 2 * _DRAIN_SECONDS + _SETTLE_SECONDS
    return (
        plan.seed_time_limit_seconds
        + plan.capacity_seconds
        + 1.0
        + 3 * (plan.sweep_time_limit_seconds + len(plan.fractions) * per_run)
        + 30.0
    )


def reads_load_section(
    stack: Stack, workdir: Path, plan: ReadsLoadPlan, progress: Progress
) -> Section:
    """The section for the report, or why it broke (the other figures stand either way)."""
    try:
        figures = measure_reads_load(stack, workdir, plan, progress)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        print(f"reads-under-load section broke: {message}", file=sys.stderr)
        for log in sorted(workdir.glob("*.log")):
            print(f"--- {log.name} ---", file=sys.stderr)
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
        return Section(TITLE, [], [], error=message)
    return Section(TITLE, render(figures, markdown=False), render(figures, markdown=True))


def main(argv: list[str] | None = None) -> int:
    """Run the section alone, on a stack of its own, and print it."""
    parser = argparse.ArgumentParser(prog="python -m bench._reads_load", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument("--markdown", action="store_true", help="print the Markdown form")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else ReadsLoadPlan()

    def progress(message: str) -> None:
        print(f"[reads {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    with (
        tempfile.TemporaryDirectory(prefix="agentic-reads-") as tmp,
        running_stack(Path(tmp)) as stack,
    ):
        section = reads_load_section(stack, Path(tmp) / "reads", plan, progress)
    # Every process that trusted them has stopped: the test key set goes too.
    shutil.rmtree(dev_keys().directory, ignore_errors=True)
    print("\n".join(section.lines(markdown=args.markdown)))
    return 1 if section.error else 0


if __name__ == "__main__":
    sys.exit(main())
