"""The task-pipeline section of a run: its figures, and how the report renders them."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench._tables import section_tail
from bench._tables import table as _table
from bench._tables import verdict as _verdict

__all__ = [
    "CPU_ROLES",
    "TaskCheck",
    "TaskFigure",
    "TaskSection",
    "find_figure",
    "render_tasks_console",
    "render_tasks_markdown",
]

CPU_ROLES = ("client", "API server", "worker", "RabbitMQ", "PostgreSQL")
"""The process trees whose CPU is metered per operation."""


@dataclass(frozen=True)
class TaskFigure:
    """One measured row; a figure that does not apply to the row is None."""

    label: str
    path: str
    p50_ms: float | None
    p99_ms: float | None
    per_second: float | None
    load: str
    """How the load was applied: "1 in flight", "paced 120/s", "1 worker x 1"."""
    count: int
    """Calls, tasks or received events the percentiles and rate come from."""
    errors: dict[str, int] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """CPU ms per operation by CPU_ROLES, when metered."""


def find_figure(figures: list[TaskFigure], prefix: str) -> TaskFigure | None:
    """The first of ``figures`` whose label starts with ``prefix``."""
    return next((f for f in figures if f.label.startswith(prefix)), None)


@dataclass(frozen=True)
class TaskCheck:
    """A target of the task section, reported (never asserted)."""

    name: str
    measured: str
    target: str
    passed: bool | None
    """None for a figure shown without a target."""


@dataclass(frozen=True)
class TaskSection:
    """Everything the task section measured."""

    seconds: float
    plan: str
    setup: str
    figures: list[TaskFigure]
    checks: list[TaskCheck]
    where: list[str]
    """Where the time goes, from this run's figures."""
    sanity: list[str]
    scaled_down: str
    """Empty, or what was measured below the asked size and why."""
    others_cores: float | None
    """Average CPUs busy with processes other than ours and the broker, over the section."""
    broker_cores: float | None
    """Average CPUs the shared RabbitMQ used over the section (ours and anyone else's)."""
    cpus: int


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _figures(section: TaskSection, *, markdown: bool) -> list[str]:
    header = ["measure", "p50 ms", "p99 ms", "per s", "load", "count", "errors"]
    rows = [
        [
            f.label,
            _num(f.p50_ms),
            _num(f.p99_ms),
            _num(f.per_second, 0),
            f.load,
            str(f.count),
            ", ".join(f"{k}: {v}" for k, v in sorted(f.errors.items())) or "0",
        ]
        for f in section.figures
    ]
    return _table(header, rows, markdown=markdown)


def _cpu(section: TaskSection, *, markdown: bool) -> list[str]:
    header = ["measure", *(f"{role} ms" for role in CPU_ROLES), "total ms"]
    rows = []
    for f in section.figures:
        if not f.cpu_ms:
            continue
        cells = [f"{f.cpu_ms[r]:.2f}" if r in f.cpu_ms else "-" for r in CPU_ROLES]
        rows.append([f.label, *cells, f"{sum(f.cpu_ms.values()):.2f}"])
    return _table(header, rows, markdown=markdown) if rows else []


def _checks(section: TaskSection, *, markdown: bool) -> list[str]:
    header = ["measure", "value", "target", "result"]
    rows = [[c.name, c.measured, c.target or "-", _verdict(c.passed)] for c in section.checks]
    return _table(header, rows, markdown=markdown)


def _load(section: TaskSection) -> str:
    if section.others_cores is None:
        return "CPU used by other processes unknown"
    broker = ""
    if section.broker_cores is not None:
        broker = f"; the shared RabbitMQ used {section.broker_cores:.2f}"
    return (
        f"other processes (PostgreSQL included, RabbitMQ not) used "
        f"{section.others_cores:.2f} of the {section.cpus} CPUs on average during the task "
        f"section{broker}"
    )


def render_tasks_console(section: TaskSection) -> list[str]:
    """The task section's lines of the console table."""
    lines = [
        "",
        f"task pipeline ({section.seconds:.0f} s)",
        "setup: " + section.setup,
        "plan: " + section.plan,
        "load: " + _load(section),
    ]
    if section.scaled_down:
        lines.append("SCALED DOWN: " + section.scaled_down)
    lines += ["", *_figures(section, markdown=False)]
    cpu = _cpu(section, markdown=False)
    if cpu:
        lines += ["", "CPU per operation (ms):", *cpu]
    lines += [
        "",
        *_checks(section, markdown=False),
        "",
        "task pipeline, where the time goes:",
        *section.where,
        "",
        *("sanity: " + s for s in section.sanity),
    ]
    return lines


_HOW = """\
Every process runs on this machine over 127.0.0.1: an API server (`python -m server`,
production defaults: heartbeat 5 s, relay 0.5 s, lease 30 s, cancel grace 10 s, 8
database threads) on the benchmark's PostgreSQL database, `python -m workers`
processes, and the raw baseline worker (`python -m bench._tasks_raw`), all on a
vhost of the shared RabbitMQ created for the run (`rabbitmqctl add_vhost`, deleted
afterwards; the broker itself is never stopped). The benchmark process is the only
client: one asyncio event loop with grpc.aio channels (`grpc.use_local_subchannel_pool`,
so each channel is its own connection), the raw publisher in a thread.

- **raw Celery apply_async (confirmed)**: `Celery.send_task` of a no-op task, one after
  the other, from a Celery app with exactly the pipeline's settings
  (`core.tasks.configure_celery`: the same durable classic priority queue with its
  dead-letter arguments, persistent, `confirm_publish`, JSON) and the arguments the API
  server publishes (`[task_id, attempt]`, priority 2). Each call returns once the broker
  confirmed the message. Its calls/s is the sequential rate, the baseline of the submit
  throughput scale row (the raw publish does none of the durable work).
- **SubmitProbe**: `TaskService.SubmitProbe` (a fresh `request_id` per call, probe of 1
  step of 0 ms) with no worker consuming, so the work queue only fills. Each call
  commits the task, its first event and an outbox row, publishes with a confirm, deletes
  the outbox row. Sequential (latency), then with a fixed number in flight (saturation
  throughput), then open loop: calls started on a fixed schedule at 80% of that
  saturation rate whatever the earlier calls did, each timed from its scheduled start
  (so a stall is charged to every call it delays). The queue is purged afterwards.
- **no-op drain**: a number of tasks queued with no consumer, then one worker process
  with concurrency 1 (prefork, one child) started; the rate is read from the queue's
  ready-message count (a passive `queue_declare` every 10 ms), between the first time
  it is 10% below the start and the first time it is at 10% of it, so start-up and the
  tail are left out. With acks late and prefetch 1 the broker hands out the next message
  only once the previous one was acknowledged, so the count falls at the processing
  rate. Pipeline: probes of 1 step of 0 ms (claim, cancel check, progress, finish:
  three events, each published as a notification); its rate is cross-checked from the
  tasks' end times in the database. Raw: the no-op task of the raw app.
- **peer drain** (issue 17, "workers with durable status, the usual way"):
  `python -m bench._tasks_peer`, Celery with its SQLAlchemy database result backend on
  the same PostgreSQL database, `task_track_started` (a STARTED row before the task, a
  SUCCESS row after), acks late, prefetch 1, the raw app's broker settings; one worker of
  concurrency 1 drains no-op tasks, measured like the other drains; every task's
  SUCCESS row is checked afterwards.
- **peer status polling** (issue 17, "status, the seeds' way"): tasks of a random
  length (0.2-1.2 s) on that peer, each followed by a client thread that polls
  `AsyncResult.state` every 0.5 s from its submit on; latency is from the SUCCESS row's
  `date_done` (the worker's state change; the backend's session runs in UTC) to the
  client's receipt of the poll that returned it. Beside the event latency of WatchTask.
- **event latency**: probes that report progress at a fixed interval run on one worker
  (one child per task); watchers are WatchTask streams spread evenly over those tasks.
  Latency is the client's receipt time (`time.time()`) minus the event's own `time`,
  stamped by the worker in the transaction that wrote it (same machine, same clock),
  for every event written inside the measuring window. First with one watcher per task
  (the notification path without fan-out), then with all watchers.
- **reconnect storm**: long probes running, all watchers connected (each has received
  the task's history); then every channel is closed at once, each task gets an event
  none of them saw (CancelTask: CANCELLING), and every watcher reconnects at once over
  new channels with `after_sequence` = the last sequence it received. Time to all
  resumed: from the reconnect until the last watcher received its first item on the new
  stream. Each stream is then followed to its end (the terminal CANCELLED event), and
  the sequences a watcher received over both streams must be exactly 1, 2, ... up to
  the terminal one: no gap, no repeat.
- **CPU per operation**: user + system CPU of each process tree (a worker with its
  prefork children; PostgreSQL's postmaster with all its backends, other databases'
  included; the RabbitMQ VM, other vhosts' work included) over the measured calls or
  the drain window, divided by the calls or tasks.
"""

_CAVEATS = """\
- Two cores run everything: the client, the API server, the workers, RabbitMQ and
  PostgreSQL. Throughput is bounded by the CPU all of them spend per operation; the CPU
  table says where it goes.
- The broker and PostgreSQL are shared with other work on this machine (another
  engineer's fault tests may run at the same time); the load line above says how busy
  the machine was, and RabbitMQ's and PostgreSQL's CPU per operation include whatever
  else they served meanwhile.
- PostgreSQL commits wait for their WAL flush (`synchronous_commit` as configured);
  a faster or slower disk moves every pipeline figure and none of the raw ones.
- Event latency depends on how many watchers share a task (each reads the database on
  every wake-up) and on how often events come; the plan line gives both.
"""


def render_tasks_markdown(section: TaskSection) -> list[str]:
    """The task section of docs/benchmarks.md."""
    parts = [
        "## Task pipeline",
        "",
        f"- Section time: {section.seconds:.0f} s",
        f"- Setup: {section.setup}",
        f"- Plan: {section.plan}",
        f"- Other load: {_load(section)}",
    ]
    if section.scaled_down:
        parts.append(f"- **Scaled down:** {section.scaled_down}")
    parts += [
        "",
        "### Figures",
        "",
        *_figures(section, markdown=True),
        "",
    ]
    cpu = _cpu(section, markdown=True)
    if cpu:
        parts += [
            "### CPU per operation",
            "",
            "CPU ms (user + system, every thread and child process) per call or task, over"
            " the measured window.",
            "",
            *cpu,
            "",
        ]
    parts += section_tail(
        _checks(section, markdown=True), section.where, section.sanity, _HOW, _CAVEATS
    )
    return parts
