"""The figures of one run, as a console table and as docs/benchmarks.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bench._artifacts_report import (
    ArtifactSection,
    render_artifacts_console,
    render_artifacts_markdown,
)
from bench._stampede import StampedeRound
from bench._tables import table as _table
from bench._tables import verdict as _verdict
from bench._tasks_report import TaskSection, render_tasks_console, render_tasks_markdown
from devtools.measure import Latency, Throughput

__all__ = [
    "CPU_ROLES",
    "Check",
    "Machine",
    "Ratio",
    "Report",
    "Row",
    "render_console",
    "render_markdown",
]

CPU_ROLES = ("client", "API server / hop1", "sidecar / hop2", "memcached")
"""The processes of a path whose CPU time is metered, in path order."""


@dataclass(frozen=True)
class Row:
    """One measured path."""

    key: str
    label: str
    path: str
    latency: Latency
    throughput: Throughput
    errors: dict[str, int]
    """Failed calls (latency and throughput together) by status code."""
    cpu_us: dict[str, float]
    """CPU µs per call by process role (CPU_ROLES) over the measured throughput calls."""


@dataclass(frozen=True)
class Ratio:
    """A ratio of two figures; ``target`` is empty for ratios shown for scale only."""

    name: str
    value: float
    target: str = ""
    passed: bool | None = None


@dataclass(frozen=True)
class Check:
    """A target that is not a ratio (the stampede)."""

    name: str
    measured: str
    target: str
    passed: bool


@dataclass(frozen=True)
class Machine:
    """Where the figures come from."""

    cpus: int
    cpus_usable: int
    python: str
    platform: str
    versions: dict[str, str]
    commit: str
    others_cores: float | None
    """Average CPUs busy with processes not started by the benchmark while it measured
    (PostgreSQL's server processes included); None when /proc is unreadable."""


@dataclass(frozen=True)
class Report:
    """Everything one run measured."""

    started: datetime
    seconds: float
    machine: Machine
    plan: str
    sizes: str
    rows: list[Row]
    ratios: list[Ratio]
    checks: list[Check]
    stampede: list[StampedeRound]
    sanity: list[str]
    tasks: TaskSection | None = None
    """The task-pipeline section (bench._tasks), when it ran."""
    tasks_error: str = ""
    """Why the task-pipeline section has no figures, when it broke."""
    artifacts: ArtifactSection | None = None
    """The artifact section (bench._artifacts), when it ran."""
    artifacts_error: str = ""
    """Why the artifact section has no figures, when it broke."""
    sections: list[Section] = field(default_factory=list)
    """The task kinds' sections (bench._profile, bench._analytics), in order."""


@dataclass(frozen=True)
class Section:
    """A section measured by its own module: its title and its lines, or why it broke."""

    title: str
    console: list[str]
    markdown: list[str]
    error: str = ""

    def lines(self, *, markdown: bool) -> list[str]:
        """The section with its heading."""
        heading = [f"## {self.title}"] if markdown else [self.title.lower()]
        body = (
            [f"The section broke: {self.error}"]
            if self.error
            else (self.markdown if markdown else self.console)
        )
        return ["", *heading, "", *body]


def _tasks_lines(report: Report, *, markdown: bool) -> list[str]:
    if report.tasks is not None:
        return (
            render_tasks_markdown(report.tasks) if markdown else render_tasks_console(report.tasks)
        )
    if report.tasks_error:
        title = "## Task pipeline" if markdown else "task pipeline"
        return ["", title, "", f"The task section broke: {report.tasks_error}"]
    return []


def _artifacts_lines(report: Report, *, markdown: bool) -> list[str]:
    if report.artifacts is not None:
        if markdown:
            return ["", *render_artifacts_markdown(report.artifacts)]
        return render_artifacts_console(report.artifacts)
    if report.artifacts_error:
        title = "## Artifacts" if markdown else "artifacts"
        return ["", title, "", f"The artifact section broke: {report.artifacts_error}"]
    return []


def _figures(report: Report, *, markdown: bool) -> list[str]:
    header = [
        "path",
        "p50 µs",
        "p99 µs",
        "mean µs",
        "latency calls",
        "calls/s",
        "in flight",
        "throughput calls",
        "errors",
    ]
    rows = [
        [
            r.label,
            f"{r.latency.p50_us:.0f}",
            f"{r.latency.p99_us:.0f}",
            f"{r.latency.mean_us:.0f}",
            str(r.latency.calls),
            f"{r.throughput.per_second:.0f}",
            str(r.throughput.concurrency),
            str(r.throughput.calls),
            ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "0",
        ]
        for r in report.rows
    ]
    return _table(header, rows, markdown=markdown)


def _cpu(report: Report, *, markdown: bool) -> list[str]:
    header = ["path", *(f"{role} µs" for role in CPU_ROLES), "total µs"]
    rows = []
    for r in report.rows:
        cells = [f"{r.cpu_us[role]:.0f}" if role in r.cpu_us else "-" for role in CPU_ROLES]
        rows.append([r.label, *cells, f"{sum(r.cpu_us.values()):.0f}"])
    return _table(header, rows, markdown=markdown)


def _targets(report: Report, *, markdown: bool) -> list[str]:
    header = ["measure", "value", "target", "result"]
    rows = [
        [r.name, f"{r.value:.2f}", r.target or "-", _verdict(r.passed)] for r in report.ratios
    ] + [[c.name, c.measured, c.target, _verdict(c.passed)] for c in report.checks]
    return _table(header, rows, markdown=markdown)


def _stampede(report: Report, *, markdown: bool) -> list[str]:
    header = [
        "round",
        "calls",
        "correct",
        "origin loads",
        "sidecar lease waits",
        "lease-wait timeouts",
        "sidecar LOAD answers",
        "loads without a lease",
        "wall ms",
        "errors",
    ]
    rows = [
        [
            str(i + 1),
            str(s.fanout),
            str(s.correct),
            str(s.origin_loads),
            str(s.sidecar_lease_waits),
            str(s.sidecar_lease_wait_timeouts),
            str(s.sidecar_load_answers),
            str(max(0, s.origin_loads - s.sidecar_load_answers)),
            f"{s.seconds * 1000:.0f}",
            ", ".join(f"{k}: {v}" for k, v in sorted(s.errors.items())) or "-",
        ]
        for i, s in enumerate(report.stampede)
    ]
    return _table(header, rows, markdown=markdown)


def _load(m: Machine) -> str:
    if m.others_cores is None:
        return "CPU used by other processes unknown"
    return (
        f"other processes (PostgreSQL included) used {m.others_cores:.2f} of the "
        f"{m.cpus_usable} CPUs on average while measuring"
    )


def _machine_line(m: Machine) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in m.versions.items())
    return (
        f"{m.cpus} CPUs ({m.cpus_usable} usable by this process), Python {m.python}, "
        f"{m.platform}; {versions}; commit {m.commit}; {_load(m)}"
    )


def render_console(report: Report) -> str:
    """The table printed at the end of a run."""
    lines = [
        "",
        f"agentic-backend read path, {report.started:%Y-%m-%d %H:%M} UTC, "
        f"{report.seconds:.0f} s run",
        "machine: " + _machine_line(report.machine),
        "plan: " + report.plan,
        "sizes: " + report.sizes,
        "",
        *_figures(report, markdown=False),
        "",
        "CPU per call (throughput runs):",
        *_cpu(report, markdown=False),
        "",
        *_targets(report, markdown=False),
        "",
        "stampede:",
        *_stampede(report, markdown=False),
        "",
        "where the time goes:",
        *_where_the_time_goes(report),
        "",
        *("sanity: " + s for s in report.sanity),
        *_tasks_lines(report, markdown=False),
        *_artifacts_lines(report, markdown=False),
        *(line for section in report.sections for line in section.lines(markdown=False)),
    ]
    return "\n".join(lines) + "\n"


_HOW = """\
All processes run on this one machine and talk over 127.0.0.1 only; the benchmark
starts and stops every one of them itself (memcached is private, `-U 0 -m 64`). Every
client is the benchmark process, on one asyncio event loop with grpc.aio channels (the
direct pymemcache row excepted). Every gRPC client sends a serialized
`GetProjectRequest` and parses a `GetProjectResponse` with the generated message
classes, so client-side work is the same for all gRPC rows. The calls rotate over 16
projects (16 cache keys).

- **GetProject, cache hit**: `ProjectService.GetProject` on an API server
  (`python -m server`) whose `AGENTIC_CACHE_ADDRESS` is a cache sidecar
  (`python -m cache_sidecar`, events off) over the private memcached. Every project
  was read once before measuring, so every measured call is a hit (checked below: the
  server's `agentic_origin_loads_total` does not move while measuring). On the way: the
  API server's interceptor (metrics, protovalidate, error mapping), the projects facade,
  the sidecar client (`CacheService.Get`, 0.25 s deadline), the sidecar's interceptor,
  its `ReadCache.get`, which runs the blocking pymemcache reads (the namespace
  generation, then the entry: two memcached round trips) in its thread pool, and back.
- **bare chain (thread)**, the baseline of the targets: the same hops with no logic
  (`bench/_bare.py`). hop1 is a `grpc.aio.server()` with one
  `grpc.method_handlers_generic_handler` and no (de)serializers; it forwards the raw
  request bytes, unparsed, over a grpc.aio channel (identity serializers, 0.25 s
  deadline) to hop2, the same kind of server, whose handler does one pymemcache `get` in
  a pool of 8 threads (`loop.run_in_executor`, one pymemcache client per thread, as the
  sidecar runs its blocking calls) of a key holding the serialized `GetProjectResponse`
  of the same project, and returns those bytes, unparsed, through hop1. No interceptor,
  validation, metrics, health or reflection service. Each hop is its own process.
- **bare chain (on loop)**: the same, except that hop2 calls pymemcache directly on its
  event loop (one client, blocking the loop for the round trip). It separates the cost
  of the thread hand-off from the cost of the logic.
- **bare one hop (thread)**: the client calls hop2 of the thread chain directly: one
  gRPC hop and the memcached get, the floor of any design with one process between the
  client and memcached.
- **direct pymemcache get**: a `pymemcache.client.base.Client` in the benchmark
  process, `get` of the bare chains' keys. Latency: sequential calls on one client;
  throughput: as many threads as the gRPC rows have calls in flight, a client each.
- **GetProject, uncached (PostgreSQL)**: `GetProject` of the same projects on a second
  API server process on the same PostgreSQL database with `AGENTIC_CACHE_ADDRESS=""`,
  so every call is a database read (SQLAlchemy/psycopg in the server's database thread
  pool); checked below by its `agentic_origin_loads_total`.
- **Latency**: sequential calls (the next starts when the previous returned), timed
  with `time.perf_counter_ns` around the client call, after warm-up calls. The rows
  are measured in interleaved passes (each pass runs every row once with a share of
  the calls) and the samples of all passes pooled, so drift and background noise fall
  on all rows alike; p50/p99 are nearest-rank percentiles. The two rows whose ratio
  is the sessions target (cache hit with session idle tracking on and off) are
  sampled call by call in alternation within each pass (A B, B A, ...): a 5% bound is
  smaller than the drift between two rows measured one after the other.
- **Throughput**: a fixed number of calls run by a fixed number of workers on the
  client's event loop (calls in flight), each starting its next call when its previous
  one returned; completed calls over wall time, pooled over the same passes, each pass
  after a warm-up burst.
- **CPU per call**: user + system CPU of each process of a path (all its threads:
  gRPC's poller, executor threads) from `/proc/<pid>/stat`, over the measured
  throughput calls, divided by those calls.
- **Errors**: a call that fails is counted (by status code) and, for latency, still
  timed; none are dropped.
- **Stampede**: each round creates a fresh project (a cold key), creates all
  GetProject calls for it before the client's event loop runs any (grpc.aio starts a
  call when it is created, so all are in flight before any completes), gathers them,
  checks every reply is that project, and counts database reads as the change of
  `agentic_origin_loads_total{resource="project"}` on the cached API server. The
  sidecar columns are the change of its `projects` counters (Stats RPC) in the round;
  "loads without a lease" is origin loads minus the sidecar's LOAD answers: reads the
  API server sent to the database because its sidecar call failed (typically its
  0.25 s deadline passed), which no lease coordinates. Client deadline 10 s.
"""

_CAVEATS = """\
- Few cores, shared by everything: the client, both API servers, the sidecar, the
  bare hops, memcached and PostgreSQL all run on the CPUs listed above. Throughput
  measures how the whole set shares them, and a two-hop path burns CPU in three
  Python processes per call (the client alone takes a large share). CPU per call
  compares paths more robustly than calls/s, which also depends on how the kernel
  schedules all these processes on so few cores.
- Other processes on the machine compete too; the "Other load" line above says how
  much CPU they used during the measurements.
- Idle processes (the other chains, the other API server) stay up while a row is
  measured; they use next to no CPU.
- Loopback has no network. In production each hop adds network time: a hit crosses
  client -> API server -> sidecar (usually beside it) -> memcached, while an uncached
  read makes several round trips per call to a PostgreSQL that is usually on another
  host, so the uncached/hit ratio is likely larger there than here.
- The bare chain does one memcached round trip; the sidecar does two on a hit (the
  namespace generation, then the entry) by design. The ratios count that as logic.
- Figures move by several percent between runs on a shared 2-core machine, enough to
  flip a target that sits near its threshold; compare ratios from the same run, not
  absolute figures across runs.
"""


def _where_the_time_goes(report: Report) -> list[str]:
    """Differences between rows of this run, spelled out (figures, not opinions)."""
    row = {r.key: r for r in report.rows}
    needed = {"hit", "bare", "bare_loop", "one_hop", "uncached"}
    if not needed <= row.keys():
        return []
    p50 = {k: r.latency.p50_us for k, r in row.items()}
    cpu = {k: r.cpu_us for k, r in row.items()}
    front, cache = CPU_ROLES[1], CPU_ROLES[2]

    def extra(a: str, b: str, role: str) -> float:
        return cpu[a].get(role, 0.0) - cpu[b].get(role, 0.0)

    hit_total = sum(cpu["hit"].values())
    bare_total = sum(cpu["bare"].values())
    lines = [
        f"- One gRPC hop with a memcached get behind it (bare one hop) takes "
        f"{p50['one_hop']:.0f} µs at p50; the second hop of the bare chain adds "
        f"{p50['bare'] - p50['one_hop']:.0f} µs.",
        f"- hop2's memcached get in a thread pool rather than on the event loop: "
        f"{p50['bare'] - p50['bare_loop']:+.0f} µs at p50 (bare chain thread minus on loop).",
        f"- The logic of the API server and the sidecar: {p50['hit'] - p50['bare']:+.0f} µs "
        f"at p50 over the bare chain. CPU per call: API server {extra('hit', 'bare', front):+.0f}"
        f" µs against hop1, sidecar {extra('hit', 'bare', cache):+.0f} µs against hop2; the "
        "whole hit path "
        f"{hit_total:.0f} µs against {bare_total:.0f} µs (bare/hit CPU ratio "
        f"{bare_total / hit_total:.2f}, next to the throughput ratio "
        f"{row['hit'].throughput.per_second / row['bare'].throughput.per_second:.2f}: on "
        "these cores throughput follows CPU per call).",
        f"- An uncached read is one hop plus the database: {p50['uncached']:.0f} µs, "
        f"{p50['uncached'] - p50['one_hop']:.0f} µs over the bare one-hop row; the "
        f"uncached API server spends {cpu['uncached'].get(front, 0.0):.0f} µs CPU per call.",
    ]
    return lines


def render_markdown(report: Report) -> str:
    """docs/benchmarks.md, written by the run itself."""
    m = report.machine
    parts = [
        "# Benchmarks",
        "",
        "<!-- Generated by `make bench` (python -m bench); every run overwrites this"
        " file. Do not edit by hand. -->",
        "",
        "Produced by `make bench` (`python -m bench`), which starts every process on"
        " 127.0.0.1, measures, prints the same tables and rewrites this file.",
        "",
        f"- Date: {report.started:%Y-%m-%d %H:%M} UTC ({report.seconds:.0f} s run)",
        f"- Machine: `nproc` = {m.cpus_usable} ({m.cpus} CPUs), Python {m.python}, {m.platform}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m.versions.items()),
        f"- Code: commit {m.commit}",
        f"- Other load: {_load(m)}",
        f"- Plan: {report.plan}",
        f"- Sizes: {report.sizes}",
        "",
        "## Figures",
        "",
        *_figures(report, markdown=True),
        "",
        "### CPU per call",
        "",
        "CPU time (user + system, all threads) each process of a path spent per call during"
        " the measured throughput calls, from `/proc/<pid>/stat`. PostgreSQL's own CPU is not"
        " included in the uncached row (its server processes are shared).",
        "",
        *_cpu(report, markdown=True),
        "",
        "## Targets",
        "",
        "Reported, not asserted: a FAIL does not fail `make bench`.",
        "",
        *_targets(report, markdown=True),
        "",
        "## Stampede",
        "",
        *_stampede(report, markdown=True),
        "",
        "## Where the time goes (this run)",
        "",
        *_where_the_time_goes(report),
        "",
        "## Sanity checks of this run",
        "",
        *("- " + s for s in report.sanity),
        "",
        "## How each figure is measured",
        "",
        _HOW,
        "## Caveats",
        "",
        _CAVEATS,
        *_tasks_lines(report, markdown=True),
        *_artifacts_lines(report, markdown=True),
        *(line for section in report.sections for line in section.lines(markdown=True)),
    ]
    return "\n".join(parts)
