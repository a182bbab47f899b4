"""The task-pipeline section of ``make bench``: the pipeline beside raw Celery (issue 4).

One private RabbitMQ vhost (``tests.workers._stack.private_vhost``: created with
``rabbitmqctl add_vhost``, deleted afterwards; the shared broker is never stopped), one
API server and worker processes (``tests.workers._stack.stack``) on the benchmark's
PostgreSQL database, with production timings. Four phases, in this order:

1. Submit (``_tasks_submit``): SubmitProbe with no worker consuming, beside sequential
   confirmed ``send_task`` of a raw Celery app with the same settings; then SubmitProbe
   in open loop at 80% of its saturation throughput.
2. No-op drain (``_tasks_submit``): one worker with concurrency 1 emptying a queue of
   no-op probes, beside the raw app's worker emptying a queue of no-op tasks.
3. Event latency (``_tasks_events``): worker timestamp to WatchTask receipt, with one
   watcher per running task, then with ``watchers`` streams over the same tasks.
4. Reconnect storm (``_tasks_events``): ``storm_watchers`` streams dropped at once and
   resumed from their last sequence; gaps and repeats checked, time to all resumed.

``bench._tasks_report`` renders the result; docs/benchmarks.md describes the method.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

from agentic.tasks.v1 import tasks_pb2_grpc

from bench._tasks_cpu import MachineMeter, TreeMeter
from bench._tasks_events import events_phase, storm_phase
from bench._tasks_load import QueueGauge
from bench._tasks_peers import naive_submit_phase, peer_app, peer_drain_phase, polling_phase
from bench._tasks_plan import ENV, Run, TaskPlan
from bench._tasks_raw import declare, make_app
from bench._tasks_report import CPU_ROLES, TaskFigure, TaskSection, find_figure
from bench._tasks_submit import drain_phase, submit_phase
from tests._identity import authorized_aio_channel
from tests.workers._stack import private_vhost, stack

__all__ = ["TaskPlan", "measure_tasks"]


async def _phases(run: Run, exits: AsyncExitStack) -> None:
    gauge = QueueGauge(run.broker_url)
    exits.callback(gauge.close)
    raw_app = make_app(run.broker_url, run.raw_queue)
    exits.callback(raw_app.close)
    await asyncio.to_thread(declare, raw_app, run.broker_url, run.raw_queue)
    channel = await exits.enter_async_context(
        authorized_aio_channel(run.server.address, options=[("grpc.enable_http_proxy", 0)])
    )
    stub = tasks_pb2_grpc.TaskServiceStub(channel)
    limit = run.plan.phase_time_limit_seconds
    await asyncio.wait_for(submit_phase(run, stub, raw_app, gauge), limit)
    await asyncio.wait_for(naive_submit_phase(run, gauge), limit)
    await asyncio.wait_for(drain_phase(run, stub, raw_app, gauge), limit)
    peer = await peer_app(run)
    exits.callback(peer.close)
    await asyncio.wait_for(peer_drain_phase(run, peer, gauge), limit)

    def start_worker() -> object:
        # One prefork child per watched probe; it stays up for phases 3 and 4.
        return run.s.start_worker(concurrency=run.plan.event_tasks, timeout=60.0)

    await asyncio.to_thread(start_worker)
    await asyncio.wait_for(events_phase(run, stub), limit)
    await asyncio.wait_for(storm_phase(run, stub), limit * 2)
    await asyncio.wait_for(polling_phase(run, peer), limit)


def _cpu_line(f: TaskFigure) -> str:
    parts = ", ".join(f"{role} {f.cpu_ms[role]:.2f}" for role in CPU_ROLES if role in f.cpu_ms)
    return f"{sum(f.cpu_ms.values()):.2f} ms ({parts})"


def _where(figures: list[TaskFigure], plan: TaskPlan) -> list[str]:
    """Differences between this run's rows, spelled out (figures, not opinions)."""
    lines: list[str] = []
    raw = find_figure(figures, "raw Celery send_task")
    seq = find_figure(figures, "SubmitProbe, sequential")
    sat = find_figure(figures, "SubmitProbe, saturation")
    if raw and seq and sat and raw.cpu_ms and sat.cpu_ms and raw.p50_ms and seq.p50_ms:
        total = sum(sat.cpu_ms.values())
        lines.append(
            f"- Submit: a sequential SubmitProbe takes {seq.p50_ms:.1f} ms at p50 against "
            f"{raw.p50_ms:.1f} ms for the confirmed publish alone, so "
            f"{seq.p50_ms - raw.p50_ms:.1f} ms is the API server and its database work. At "
            f"saturation one SubmitProbe costs {_cpu_line(sat)} of CPU; a raw confirmed "
            f"publish costs {_cpu_line(raw)}. With {os.cpu_count()} CPUs for everything, "
            f"{total:.2f} ms per submit caps the rate near "
            f"{1000 * (os.cpu_count() or 1) / total:.0f}/s; measured {sat.per_second or 0:.0f}/s."
        )
    paced = find_figure(figures, "SubmitProbe, open loop")
    if paced and paced.per_second and paced.p50_ms is not None and sat and sat.p50_ms:
        lines.append(
            f"- Open loop: {paced.load}, {paced.per_second:.0f}/s completed, p50 "
            f"{paced.p50_ms:.1f} ms. When that p50 is far above the sequential one, the "
            "server did not keep up with 80% of the rate it reached with "
            f"{plan.in_flight} in flight and calls queued (for the group commit of submits "
            "and the publisher thread's confirm batches): saturation is set by CPU."
        )
    raw_d = find_figure(figures, "raw Celery no-op drain")
    pipe_d = find_figure(figures, "no-op probe drain")
    if raw_d and pipe_d and raw_d.cpu_ms and pipe_d.cpu_ms:
        lines.append(
            f"- No-op task: the pipeline spends {_cpu_line(pipe_d)} of CPU per task, raw "
            f"Celery {_cpu_line(raw_d)}; every pipeline task is four PostgreSQL round trips "
            "(read, claim, progress, finish; three of them commits that wait for the disk), "
            "three event notifications (without confirms) and Celery's time-limit timers."
        )
    base = find_figure(figures, "event latency, 1 watcher")
    many = find_figure(figures, f"event latency, {plan.watchers}")
    if base and many and base.p50_ms is not None and many.p50_ms is not None:
        per_task = plan.watchers // plan.event_tasks
        server = many.cpu_ms.get(CPU_ROLES[1])
        lines.append(
            f"- Events: with one watcher per task an event reaches its watcher in "
            f"{base.p50_ms:.1f} ms at p50 (commit, notification through the fanout exchange, "
            f"one database read, the stream); with {per_task} watchers per task, "
            f"{many.p50_ms:.1f} ms: the task's feed reads the event once and sends it to its "
            f"{per_task} streams one after another on one event loop"
            + (
                ""
                if not server
                else f", {server:.2f} ms of API server CPU per delivered event (one server "
                f"process, one GIL: at most about {1000 / server:.0f} deliveries/s)"
            )
            + ". Idle streams cost no reads: one safety re-read per task per heartbeat "
            "interval (5 s)."
        )
    connect = find_figure(figures, "storm:")
    resume = (
        find_figure(figures, "storm:") if connect is None else find_figure(figures[::-1], "storm:")
    )
    if connect and resume and connect.per_second and resume.per_second:
        lines.append(
            f"- Storm: {connect.count} streams connected at {connect.per_second:.0f}/s and "
            f"{resume.count} resumed at {resume.per_second:.0f}/s; a resuming stream within "
            "its feed's window is served from memory, one further behind reads its missing "
            "events once."
        )
    return lines


async def measure_tasks(
    database_url: str, workdir: Path, plan: TaskPlan, progress: Callable[[str], None]
) -> TaskSection:
    """Start the pipeline on a private vhost, run the four phases, stop everything."""
    clock = time.monotonic()
    progress("tasks: private vhost, API server")
    async with AsyncExitStack() as stack_:
        broker_url = stack_.enter_context(private_vhost())
        s = stack_.enter_context(stack(workdir, broker_url, database_url, **ENV))
        await asyncio.to_thread(s.start_server)
        run = Run(s, plan, progress, database_url, broker_url)
        machine = MachineMeter(TreeMeter({"ours": os.getpid(), "RabbitMQ": run.meters.broker_pid}))
        machine.start()
        window = time.monotonic()
        await _phases(run, stack_)
        ours = machine.stop()
        window = time.monotonic() - window
        progress("tasks: stopping workers and the API server")
    others = broker = None
    if machine.busy_seconds is not None and window > 0:
        broker_s = ours.get("RabbitMQ")
        others = max(0.0, machine.busy_seconds - sum(ours.values())) / window
        broker = None if broker_s is None else broker_s / window
    return TaskSection(
        seconds=time.monotonic() - clock,
        plan=plan.describe(),
        setup=(
            "one API server (8 database threads) and `python -m workers` processes on the "
            "benchmark's PostgreSQL database, a private vhost of the shared RabbitMQ, "
            "production timings (heartbeat 5 s, lease 30 s, cancel grace 10 s)"
        ),
        figures=run.figures,
        checks=run.checks,
        where=_where(run.figures, plan),
        sanity=run.sanity,
        scaled_down=run.scaled_down,
        others_cores=others,
        broker_cores=broker,
        cpus=len(os.sched_getaffinity(0)),
    )
