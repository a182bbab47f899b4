"""The task section's peer rows (issue 17, rows 2 to 4): what a team writes instead.

2. Submit: ``bench._naive_submit`` (SubmitProbe that only calls ``send_task`` with the
   seeds' settings), sync thread-pool and grpc.aio forms, each at 1 and ``in_flight``
   calls in flight, beside SubmitProbe's own rows of the submit phase.
3. Drain: one worker of concurrency 1 of ``bench._tasks_peer`` (Celery with its
   SQLAlchemy result backend on the benchmark's PostgreSQL, STARTED tracked) empties a
   queue of no-op tasks; it is done when every task's SUCCESS row is there. Beside the
   pipeline's no-op probe drain, with the same broker guarantees.
4. Status: ``status_tasks`` tasks that each run a random time, one client thread per task
   polling ``AsyncResult.state`` every ``POLL_SECONDS`` from its submit on (the seeds'
   "ask every few seconds"); latency is from the SUCCESS row's ``date_done`` (the worker's
   state change) to the poll that returned it. Beside WatchTask's event latency.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import grpc
from agentic.tasks.v1 import tasks_pb2_grpc
from celery import Celery
from celery.result import AsyncResult

from bench._tasks_cpu import TreeMeter
from bench._tasks_load import QueueGauge, closed_loop
from bench._tasks_peer import NOOP_TASK, SLEEP_TASK, make_peer_app
from bench._tasks_plan import (
    CALL_TIMEOUT_SECONDS,
    DRAIN_OVER_PEER_MIN,
    SUBMIT_OVER_NAIVE_MIN,
    Run,
    ms,
    per_op_ms,
    percentiles,
    submit_request,
)
from bench._tasks_raw import declare, publish
from bench._tasks_report import CPU_ROLES, TaskCheck, TaskFigure, find_figure
from bench._tasks_submit import drain_one
from devtools.measure import Errors, error_name
from tests._processes import start_service
from tests._support import libpq_url

__all__ = [
    "POLL_SECONDS",
    "naive_submit_phase",
    "peer_app",
    "peer_drain_phase",
    "peer_queue",
    "polling_phase",
]

POLL_SECONDS = 0.5
_SLEEP_RANGE_SECONDS = (0.2, 1.2)


def _publish(app: Celery, queue: str, name: str, args: list[Any]) -> str:
    """One confirmed publish; the task id."""
    task_id = str(uuid.uuid4())
    publish(app, queue, name, args, task_id)
    return task_id


async def _naive_rows(run: Run, mode: str, errors: Errors) -> list[TaskFigure]:
    """One form of the naive servicer at 1 and ``in_flight`` calls in flight."""
    plan = run.plan
    env = {**run.s.env, "AGENTIC_TASK_QUEUE": f"{run.queue}.naive", "BENCH_MODE": mode}
    service = await asyncio.to_thread(
        start_service, "bench._naive_submit", env, run.s.workdir / "naive", timeout=30.0
    )
    channel = grpc.aio.insecure_channel(service.address, options=[("grpc.enable_http_proxy", 0)])
    stub = tasks_pb2_grpc.TaskServiceStub(channel)

    def call() -> Any:
        return stub.SubmitProbe(submit_request(), timeout=CALL_TIMEOUT_SECONDS)

    client, server, _, broker, _ = CPU_ROLES
    meter = TreeMeter(
        {client: os.getpid(), server: service.process.pid, broker: run.meters.broker_pid},
        alone=frozenset({client}),
    )
    rows = []
    try:
        for in_flight in (1, plan.in_flight):
            calls = plan.latency_calls if in_flight == 1 else plan.saturation_calls
            await closed_loop(
                call, errors, calls=plan.latency_warmup, in_flight=in_flight, time_limit_seconds=20
            )
            meter.start()
            samples, wall = await closed_loop(
                call, errors, calls=calls, in_flight=in_flight, time_limit_seconds=20.0
            )
            cpu = meter.stop()
            rows.append(
                TaskFigure(
                    f"naive Submit ({mode}), {in_flight} in flight",
                    "client -> gRPC servicer -> send_task (no confirm, no database)",
                    *ms(samples),
                    len(samples) / wall if wall > 0 else None,
                    f"{in_flight} in flight",
                    len(samples),
                    dict(errors),
                    per_op_ms(cpu, len(samples)),
                )
            )
    finally:
        await channel.close()
        await asyncio.to_thread(service.stop)
    return rows


async def naive_submit_phase(run: Run, gauge: QueueGauge) -> None:
    """Both naive forms, then SubmitProbe's saturation beside the faster of them."""
    run.progress("tasks: naive Submit servicers (sync, aio)")
    errors: Errors = Counter()
    rows = [*await _naive_rows(run, "sync", errors), *await _naive_rows(run, "aio", errors)]
    purged = await asyncio.to_thread(gauge.purge, f"{run.queue}.naive")
    run.figures += rows
    loaded = [r for r in rows if r.load == f"{run.plan.in_flight} in flight" and r.per_second]
    best = max(loaded, key=lambda r: r.per_second or 0.0, default=None)
    ours = find_figure(run.figures, "SubmitProbe, saturation")
    ratio = None
    if best and best.per_second and ours and ours.per_second:
        ratio = ours.per_second / best.per_second
    run.checks.append(
        TaskCheck(
            f"SubmitProbe calls/s / the faster naive Submit's ({run.plan.in_flight} in flight; "
            "durable, idempotent and confirmed against send_task alone)",
            "-"
            if ratio is None or best is None or ours is None
            else f"{ratio:.2f} ({ours.per_second:.0f} / {best.per_second:.0f}, {best.label})",
            f">= {SUBMIT_OVER_NAIVE_MIN}",
            ratio is not None and ratio >= SUBMIT_OVER_NAIVE_MIN and not errors,
        )
    )
    run.sanity.append(f"naive submit: {purged} messages purged from its queue afterwards")


def _succeeded(database_url: str, ids: list[str]) -> int:
    """How many of ``ids`` have their SUCCESS row in the peer's result table."""
    import psycopg

    with psycopg.connect(libpq_url(database_url), connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM celery_taskmeta WHERE task_id = ANY(%s) AND status = %s",
            (ids, "SUCCESS"),
        ).fetchone()
    return 0 if row is None else int(row[0])


def peer_queue(run: Run) -> str:
    """The peer's work queue on the section's vhost."""
    return f"{run.queue}.peer"


async def peer_app(run: Run) -> Celery:
    """The peer app on its own queue (declared like the pipeline's)."""
    app = make_peer_app(run.broker_url, peer_queue(run), run.database_url)
    await asyncio.to_thread(declare, app, run.broker_url, peer_queue(run))
    return app


async def peer_drain_phase(run: Run, app: Celery, gauge: QueueGauge) -> None:
    """No-op tasks drained by the peer's worker, beside the no-op probe drain's row."""
    plan = run.plan
    queue = peer_queue(run)
    run.progress(f"tasks: peer drain of {plan.drain_tasks} no-op tasks (database backend)")
    ids = await asyncio.to_thread(
        lambda: [_publish(app, queue, NOOP_TASK, []) for _ in range(plan.drain_tasks)]
    )
    done = 0

    async def finished() -> bool:
        nonlocal done
        done = await asyncio.to_thread(_succeeded, run.database_url, ids)
        return done >= len(ids)

    result, cpu = await drain_one(
        run,
        gauge,
        queue,
        plan.drain_tasks,
        command=[sys.executable, "-m", "bench._tasks_peer"],
        finished=finished,
    )
    errors = {} if result.final_depth == 0 else {"left in queue": result.final_depth}
    if done < len(ids):
        errors["no SUCCESS row"] = len(ids) - done
    run.figures.append(
        TaskFigure(
            "peer: Celery + database result backend, no-op drain",
            "RabbitMQ -> worker -> STARTED row, no-op, SUCCESS row (PostgreSQL) -> ack",
            None,
            None,
            result.per_second,
            "1 worker x 1",
            result.measured,
            errors,
            per_op_ms(cpu, result.measured),
        )
    )
    peer = result.per_second
    probe = find_figure(run.figures, "no-op probe drain")
    pipeline = probe.per_second if probe else None
    ratio = pipeline / peer if pipeline and peer else None
    run.checks.append(
        TaskCheck(
            "no-op probe tasks/s / peer tasks/s (Celery + database result backend, one "
            "worker, concurrency 1)",
            "-" if ratio is None else f"{ratio:.2f} ({pipeline:.0f} / {peer:.0f})",
            f">= {DRAIN_OVER_PEER_MIN}",
            ratio is not None and ratio >= DRAIN_OVER_PEER_MIN and not errors,
        )
    )
    run.sanity.append(f"peer drain: {done} of {len(ids)} SUCCESS rows in celery_taskmeta")


def _poll(app: Celery, task_id: str, deadline: float, errors: Errors) -> float | None:
    """Poll every POLL_SECONDS until SUCCESS; ms from its date_done to that poll's answer."""
    result = AsyncResult(task_id, app=app)
    start = time.monotonic()
    tick = 0
    while time.monotonic() < deadline:
        try:
            state = result.state
        except Exception as exc:
            errors[error_name(exc)] += 1
            state = ""
        if state == "SUCCESS":
            known = time.time()
            done = result.date_done
            if not isinstance(done, datetime):
                errors["no date_done"] += 1
                return None
            if done.tzinfo is None:
                done = done.replace(tzinfo=UTC)
            return (known - done.timestamp()) * 1000.0
        tick += 1
        time.sleep(max(0.0, start + tick * POLL_SECONDS - time.monotonic()))
    errors["not SUCCESS in time"] += 1
    return None


async def polling_phase(run: Run, app: Celery) -> None:
    """Tasks of random length, each followed by a thread polling its AsyncResult."""
    plan = run.plan
    queue = peer_queue(run)
    count = plan.status_tasks
    run.progress(f"tasks: {count} peer tasks polled every {POLL_SECONDS} s")
    worker = await asyncio.to_thread(
        run.s.start_worker,
        concurrency=plan.status_concurrency,
        timeout=60.0,
        command=[sys.executable, "-m", "bench._tasks_peer"],
        AGENTIC_TASK_QUEUE=queue,
    )
    pick = random.Random(17)
    errors: Errors = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + plan.phase_time_limit_seconds / 2

    def one(seconds: float) -> float | None:
        task_id = _publish(app, queue, SLEEP_TASK, [seconds])
        local: Errors = Counter()
        latency = _poll(app, task_id, deadline, local)
        with lock:
            errors.update(local)
        return latency

    def all_tasks() -> list[float | None]:
        lengths = [pick.uniform(*_SLEEP_RANGE_SECONDS) for _ in range(count)]
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(one, lengths))

    try:
        latencies = [x for x in await asyncio.to_thread(all_tasks) if x is not None]
    finally:
        await asyncio.to_thread(worker.stop)
    p50, p99 = percentiles(latencies)
    run.figures.append(
        TaskFigure(
            f"peer: AsyncResult polled every {POLL_SECONDS:g} s, state change known",
            "worker SUCCESS row (PostgreSQL) -> the next poll of the client",
            p50,
            p99,
            None,
            f"{count} tasks, {plan.status_concurrency} worker children",
            len(latencies),
            dict(errors),
        )
    )
    watch = find_figure(run.figures, "event latency, 1 watcher")
    if watch and watch.p50_ms and p50:
        run.checks.append(
            TaskCheck(
                "polling p50 / WatchTask event p50 (1 watcher per task): how much sooner "
                "a watcher knows",
                f"{p50 / watch.p50_ms:.0f}x ({p50:.0f} / {watch.p50_ms:.1f} ms)",
                "",
                None,
            )
        )
