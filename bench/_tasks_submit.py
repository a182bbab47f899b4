"""Phases 1 and 2 of the task section: SubmitProbe beside raw confirmed publishes, and
a no-op drain by one worker beside the raw Celery app's worker."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from bench._tasks_load import Drain, QueueGauge, closed_loop, drain, open_loop
from bench._tasks_plan import (
    CALL_TIMEOUT_SECONDS,
    DRAIN_OVER_RAW_MIN,
    PACED_FRACTION,
    PACED_P99_MAX_MS,
    Run,
    end_times,
    ms,
    per_op_ms,
    submit_probes,
    submit_request,
)
from bench._tasks_raw import publish_noop
from bench._tasks_report import TaskCheck, TaskFigure
from devtools.measure import Errors, sample_async, sample_sync
from tests._processes import Worker

__all__ = ["drain_one", "drain_phase", "submit_phase"]


async def submit_phase(run: Run, stub: Any, raw_app: Any, gauge: QueueGauge) -> None:
    """Raw confirmed publishes and SubmitProbe (sequential, then ``in_flight`` at a time),
    in interleaved passes; then SubmitProbe in open loop at 80% of its saturation rate."""
    plan = run.plan

    def raw_call() -> None:
        publish_noop(raw_app, run.raw_queue, str(uuid.uuid4()))

    def submit_call() -> Awaitable[object]:
        call: Awaitable[object] = stub.SubmitProbe(submit_request(), timeout=CALL_TIMEOUT_SECONDS)
        return call

    raw_errors: Errors = Counter()
    seq_errors: Errors = Counter()
    sat_errors: Errors = Counter()
    raw_samples: list[int] = []
    seq_samples: list[int] = []
    sat_samples: list[int] = []
    walls = {"raw": 0.0, "seq": 0.0, "sat": 0.0}
    cpu: dict[str, Counter[str]] = {k: Counter() for k in walls}
    limit = 20.0
    for number in range(plan.passes):
        warmup = plan.latency_warmup if number == 0 else 10
        run.progress(f"tasks: submit pass {number + 1}/{plan.passes}")
        meter = run.meters.meter()
        meter.start()
        begin = time.perf_counter()
        raw_samples += await asyncio.to_thread(
            sample_sync,
            raw_call,
            raw_errors,
            calls=plan.latency_calls,
            warmup=warmup,
            time_limit_seconds=limit,
        )
        walls["raw"] += time.perf_counter() - begin
        cpu["raw"].update(meter.stop())
        meter.start()
        begin = time.perf_counter()
        seq_samples += await sample_async(
            submit_call,
            seq_errors,
            calls=plan.latency_calls,
            warmup=warmup,
            time_limit_seconds=limit,
        )
        walls["seq"] += time.perf_counter() - begin
        cpu["seq"].update(meter.stop())
        await closed_loop(
            submit_call,
            sat_errors,
            calls=warmup,
            in_flight=plan.in_flight,
            time_limit_seconds=limit,
        )
        meter.start()
        samples, wall = await closed_loop(
            submit_call,
            sat_errors,
            calls=plan.saturation_calls,
            in_flight=plan.in_flight,
            time_limit_seconds=limit,
        )
        cpu["sat"].update(meter.stop())
        sat_samples += samples
        walls["sat"] += wall

    # The sequential rows' wall time includes their warm-up calls; count them too.
    warm = plan.latency_warmup + 10 * (plan.passes - 1)
    raw_rate = (len(raw_samples) + warm) / walls["raw"]
    seq_rate = (len(seq_samples) + warm) / walls["seq"]
    sat_rate = len(sat_samples) / walls["sat"]
    pace = PACED_FRACTION * sat_rate
    run.progress(f"tasks: SubmitProbe open loop at {pace:.0f}/s")
    paced_errors: Errors = Counter()
    meter = run.meters.meter()
    meter.start()
    paced, paced_wall, skipped = await open_loop(
        submit_call,
        paced_errors,
        per_second=pace,
        seconds=plan.paced_seconds,
        max_outstanding=plan.in_flight * 32,
        time_limit_seconds=30.0,
    )
    paced_cpu = meter.stop()
    if skipped:
        paced_errors["not started: too many in flight"] += skipped
    purged = await asyncio.to_thread(gauge.purge, run.queue)
    await asyncio.to_thread(gauge.purge, run.raw_queue)

    raw_p, seq_p, sat_p, paced_p = (
        ms(raw_samples),
        ms(seq_samples),
        ms(sat_samples),
        ms(paced),
    )
    run.figures += [
        TaskFigure(
            "raw Celery send_task, confirmed",
            "client thread -> RabbitMQ (confirm)",
            *raw_p,
            raw_rate,
            "1 in flight",
            len(raw_samples),
            dict(raw_errors),
            per_op_ms(dict(cpu["raw"]), len(raw_samples) + warm),
        ),
        TaskFigure(
            "SubmitProbe, sequential",
            "client -> API server -> PostgreSQL, RabbitMQ (confirm), PostgreSQL",
            *seq_p,
            seq_rate,
            "1 in flight",
            len(seq_samples),
            dict(seq_errors),
            per_op_ms(dict(cpu["seq"]), len(seq_samples) + warm),
        ),
        TaskFigure(
            "SubmitProbe, saturation",
            "the same",
            *sat_p,
            sat_rate,
            f"{plan.in_flight} in flight",
            len(sat_samples),
            dict(sat_errors),
            per_op_ms(dict(cpu["sat"]), len(sat_samples)),
        ),
        TaskFigure(
            f"SubmitProbe, open loop at {PACED_FRACTION:.0%}",
            "the same",
            *paced_p,
            len(paced) / paced_wall if paced_wall > 0 else None,
            f"paced {pace:.0f}/s",
            len(paced),
            dict(paced_errors),
            per_op_ms(paced_cpu, len(paced)),
        ),
    ]
    ratio = sat_rate / raw_rate
    run.checks.append(
        TaskCheck(
            f"scale: SubmitProbe calls/s ({plan.in_flight} in flight) / raw confirmed "
            "send_task calls/s (sequential; the raw publish does none of the durable work)",
            f"{ratio:.2f} ({sat_rate:.0f} / {raw_rate:.0f})",
            "",
            None,
        )
    )
    p99 = paced_p[1]
    run.checks.append(
        TaskCheck(
            f"SubmitProbe p99 at {PACED_FRACTION:.0%} of saturation ({pace:.0f}/s, open loop)",
            "-" if p99 is None else f"{p99:.1f} ms",
            f"<= {PACED_P99_MAX_MS:.0f} ms",
            p99 is not None and p99 <= PACED_P99_MAX_MS and not paced_errors,
        )
    )
    run.sanity.append(
        f"submit: {purged} messages purged from the work queue after the submit rows "
        "(no worker consumed them)"
    )


# --- 2. drain ----------------------------------------------------------------------


async def drain_one(
    run: Run,
    gauge: QueueGauge,
    queue: str,
    count: int,
    *,
    command: list[str] | None,
    finished: Callable[[], Awaitable[bool]],
) -> tuple[Drain, dict[str, float]]:
    """Start a worker (concurrency 1) on a filled queue, meter the drain, stop it once
    ``finished`` says the last task ran (stopping earlier would kill that task)."""
    start_depth = await asyncio.to_thread(gauge.wait_depth, queue, count, timeout_seconds=30.0)

    def start() -> Worker:
        if command is None:
            return run.s.start_worker(concurrency=1, wait=False)
        return run.s.start_worker(
            concurrency=1, wait=False, command=command, AGENTIC_TASK_QUEUE=queue
        )

    worker = await asyncio.to_thread(start)
    meter = run.meters.meter(worker.process.pid)
    try:
        result = await asyncio.to_thread(
            drain, gauge, queue, start_depth=start_depth, time_limit_seconds=60.0, meter=meter
        )
        for _ in range(300):  # polled, at most 30 s
            if await finished():
                break
            await asyncio.sleep(0.1)
    finally:
        await asyncio.to_thread(worker.stop)
    cpu = dict(meter.seconds) if result.per_second is not None else {}
    return result, cpu


async def drain_phase(run: Run, stub: Any, raw_app: Any, gauge: QueueGauge) -> None:
    """Raw no-op tasks, then no-op probes, each drained by one worker of concurrency 1."""
    plan = run.plan
    run.progress(f"tasks: raw drain of {plan.raw_drain_tasks} no-op tasks")

    def publish_all() -> None:
        for _ in range(plan.raw_drain_tasks):
            publish_noop(raw_app, run.raw_queue, str(uuid.uuid4()))

    await asyncio.to_thread(publish_all)

    async def raw_finished() -> bool:
        # The raw app records nothing: the queue is empty, give the last no-op (well under
        # a millisecond) a moment to be acknowledged.
        await asyncio.sleep(0.5)
        return True

    raw, raw_cpu = await drain_one(
        run,
        gauge,
        run.raw_queue,
        plan.raw_drain_tasks,
        command=[sys.executable, "-m", "bench._tasks_raw"],
        finished=raw_finished,
    )
    run.progress(f"tasks: pipeline drain of {plan.drain_tasks} no-op probes")
    ids = await submit_probes(stub, plan.drain_tasks, steps=1, step_millis=0)
    ended: tuple[int, float | None] = (0, None)

    async def pipeline_finished() -> bool:
        nonlocal ended
        ended = await asyncio.to_thread(end_times, run.database_url, ids)
        return ended[0] >= len(ids)

    pipe, pipe_cpu = await drain_one(
        run, gauge, run.queue, plan.drain_tasks, command=None, finished=pipeline_finished
    )
    done, span = ended
    run.figures += [
        TaskFigure(
            "raw Celery no-op drain",
            "RabbitMQ -> worker parent -> child (no-op) -> ack",
            None,
            None,
            raw.per_second,
            "1 worker x 1",
            raw.measured,
            {} if raw.final_depth == 0 else {"left in queue": raw.final_depth},
            per_op_ms(raw_cpu, raw.measured),
        ),
        TaskFigure(
            "no-op probe drain",
            "RabbitMQ -> worker -> claim, cancel check, progress, finish (PostgreSQL, "
            "3 notifications) -> ack",
            None,
            None,
            pipe.per_second,
            "1 worker x 1",
            pipe.measured,
            {} if pipe.final_depth == 0 else {"left in queue": pipe.final_depth},
            per_op_ms(pipe_cpu, pipe.measured),
        ),
    ]
    if raw.per_second and pipe.per_second:
        ratio = pipe.per_second / raw.per_second
        run.checks.append(
            TaskCheck(
                "no-op probe tasks/s / raw Celery no-op tasks/s (one worker, concurrency 1)",
                f"{ratio:.2f} ({pipe.per_second:.0f} / {raw.per_second:.0f})",
                f">= {DRAIN_OVER_RAW_MIN}",
                ratio >= DRAIN_OVER_RAW_MIN,
            )
        )
    else:
        run.checks.append(
            TaskCheck(
                "no-op drain ratio",
                "not measured (drain too slow)",
                f">= {DRAIN_OVER_RAW_MIN}",
                False,
            )
        )
    db_rate = (done - 1) / span if span else None
    run.sanity.append(
        f"drain: {done} of {len(ids)} probes SUCCEEDED; from their end times in the "
        f"database {'-' if db_rate is None else f'{db_rate:.0f}'} tasks/s over all of "
        "them (worker start-up excluded, tail included)"
    )


# --- 3. event latency --------------------------------------------------------------
