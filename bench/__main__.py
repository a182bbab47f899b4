"""``python -m bench`` (``make bench``): measure, print the table, write the docs.

After the read path (the cache), the task-pipeline section (``bench._tasks``)
runs on the same PostgreSQL database with its own RabbitMQ vhost, API server and
workers, then the artifact section (``bench._artifacts``) with its own API servers,
bare servicer and moto S3 server, then the dataset kinds (``bench._profile``,
``bench._analytics``: the whole pipeline beside plain DuckDB), then reads under load
(``bench._reads_load``: three API server variants at fixed offered rates); all go into
one report.

Options: ``--quick`` (a tenth of the calls, for trying the harness; does not write the
docs unless ``--docs`` is given) and ``--docs PATH`` (default docs/benchmarks.md;
``--docs ''`` writes nothing). Exit status 0 whether targets pass or fail; non-zero
only when the run itself breaks (a broken task or artifact section is reported, the
other figures are still written, and the exit status is 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType

from bench._analytics import QUICK as _QUICK_ANALYTICS
from bench._analytics import AnalyticsPlan, measure_analytics
from bench._artifacts import QUICK as _QUICK_ARTIFACTS
from bench._artifacts import ArtifactPlan, measure_artifacts
from bench._artifacts_report import ArtifactSection
from bench._cpu import OthersMeter
from bench._profile import QUICK as _QUICK_PROFILE
from bench._profile import ProfilePlan, measure_profile
from bench._profile import render as render_profile
from bench._reads_load import QUICK as _QUICK_READS_LOAD
from bench._reads_load import ReadsLoadPlan, reads_load_section
from bench._report import Machine, Report, Section, render_console, render_markdown
from bench._stack import Stack, running_stack
from bench._suite import Plan, measure
from bench._tasks import TaskPlan, measure_tasks
from bench._tasks_report import TaskSection
from tests._identity import dev_keys
from tests._support import REPO, libpq_url

_DEFAULT_DOCS = REPO / "docs" / "benchmarks.md"
# The whole measurement (not the process start-up) is bounded by this.
_RUN_TIMEOUT_SECONDS = 420.0
_QUICK = Plan(
    latency_calls=200,
    latency_warmup=50,
    throughput_calls=500,
    throughput_warmup=50,
    passes=2,
    row_time_limit_seconds=4.0,
    stampede_rounds=2,
)
# The task section's phases have their own bounds; this one guards the whole section.
_TASKS_TIMEOUT_SECONDS = 420.0
_QUICK_TASKS = TaskPlan(
    latency_calls=60,
    latency_warmup=10,
    saturation_calls=150,
    passes=1,
    paced_seconds=2.0,
    drain_tasks=60,
    raw_drain_tasks=200,
    event_tasks=4,
    event_step_millis=1000,
    baseline_seconds=3.0,
    watchers=100,
    window_seconds=3.0,
    storm_watchers=400,
    storm_step_millis=1000,
    channels=4,
    status_tasks=12,
)


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _postgres_version(database_url: str) -> str:
    import psycopg

    with psycopg.connect(libpq_url(database_url), connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


def _machine(stack: Stack, others_cores: float | None) -> Machine:
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain"):
        commit += " with uncommitted changes"
    versions = {
        name: metadata.version(name) for name in ("grpcio", "protobuf", "pymemcache", "psycopg")
    }
    versions["memcached"] = stack.memcached_version.removeprefix("memcached ")
    versions["PostgreSQL"] = _postgres_version(stack.database_url)
    return Machine(
        cpus=os.cpu_count() or 0,
        cpus_usable=len(os.sched_getaffinity(0)),
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        versions=versions,
        commit=commit,
        others_cores=others_cores,
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _tasks(database_url: str, workdir: Path, plan: TaskPlan) -> tuple[TaskSection | None, str]:
    """The task section, or why it broke (the cache figures are reported either way)."""
    try:
        section = asyncio.run(
            asyncio.wait_for(
                measure_tasks(database_url, workdir, plan, _progress), _TASKS_TIMEOUT_SECONDS
            )
        )
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        print(f"task section broke: {message}", file=sys.stderr)
        for log in sorted(workdir.glob("*/*/*.log")):
            print(f"--- {log.name} ---", file=sys.stderr)
            print(_tail(log), file=sys.stderr)
        return None, message
    return section, ""


def _artifact_section(
    database_url: str, workdir: Path, plan: ArtifactPlan
) -> tuple[ArtifactSection | None, str]:
    """The artifact section, or why it broke (the other figures are reported either way).
    It bounds itself: every stream has a deadline and no pass starts past its budget."""
    try:
        return measure_artifacts(database_url, workdir, plan, _progress), ""
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        print(f"artifact section broke: {message}", file=sys.stderr)
        for log in sorted(workdir.glob("*.log")):
            print(f"--- {log.name} ---", file=sys.stderr)
            print(_tail(log), file=sys.stderr)
        return None, message


def _kind_sections(
    database_url: str, workdir: Path, profile_plan: ProfilePlan, analytics_plan: AnalyticsPlan
) -> list[Section]:
    """The sections of the task kinds that work on datasets, each beside plain DuckDB."""
    sections: list[Section] = []
    try:
        (workdir / "profile").mkdir(parents=True)
        figures = measure_profile(workdir / "profile", profile_plan, database_url, _progress)
        sections.append(
            Section(
                "Dataset profile (ProfileDataset)",
                render_profile(figures, markdown=False),
                render_profile(figures, markdown=True),
            )
        )
    except Exception as exc:
        print(f"profile section broke: {type(exc).__name__}: {exc}", file=sys.stderr)
        sections.append(
            Section(
                "Dataset profile (ProfileDataset)", [], [], error=f"{type(exc).__name__}: {exc}"
            )
        )
    try:
        analytics = measure_analytics(
            database_url, workdir / "analytics", analytics_plan, _progress
        )
        sections.append(
            Section("Analytics (RunAnalytics)", analytics.console(), analytics.markdown())
        )
    except Exception as exc:
        print(f"analytics section broke: {type(exc).__name__}: {exc}", file=sys.stderr)
        sections.append(
            Section("Analytics (RunAnalytics)", [], [], error=f"{type(exc).__name__}: {exc}")
        )
    return sections


def run(
    plan: Plan,
    task_plan: TaskPlan,
    artifact_plan: ArtifactPlan,
    kind_plans: tuple[ProfilePlan, AnalyticsPlan],
    reads_load_plan: ReadsLoadPlan,
    docs: Path | None,
) -> int:
    """Start the stack in a temporary directory, measure, report; return the exit status."""
    started = datetime.now(UTC)
    clock = time.monotonic()
    _progress(f"{os.cpu_count()} CPUs; starting memcached, sidecar, API servers, bare hops")
    with (
        tempfile.TemporaryDirectory(prefix="agentic-bench-") as tmp,
        running_stack(Path(tmp)) as stack,
    ):
        others = OthersMeter([os.getpid(), stack.memcached_pid, *stack.pids()])
        try:
            others.start()
            window = time.monotonic()
            results = asyncio.run(
                asyncio.wait_for(measure(stack, plan, _progress), _RUN_TIMEOUT_SECONDS)
            )
            others.stop()
            window = time.monotonic() - window
            others_cores = None
            if others.others_seconds is not None and window > 0:
                others_cores = others.others_seconds / window
            machine = _machine(stack, others_cores)
        except Exception:
            for service in stack.services:
                print(f"--- {service.log_path.name} ---", file=sys.stderr)
                print(_tail(service.log_path), file=sys.stderr)
            raise
        tasks, tasks_error = _tasks(stack.database_url, Path(tmp) / "tasks", task_plan)
        artifacts, artifacts_error = _artifact_section(
            stack.database_url, Path(tmp) / "artifacts", artifact_plan
        )
        sections = _kind_sections(stack.database_url, Path(tmp) / "kinds", *kind_plans)
        # Bounds itself (every phase, and the whole section); a break is reported in it.
        sections.append(
            reads_load_section(stack, Path(tmp) / "reads-load", reads_load_plan, _progress)
        )
        _progress("stopping")
    # Every process that trusted them has stopped: the test key set goes too.
    shutil.rmtree(dev_keys().directory, ignore_errors=True)
    report = Report(
        started=started,
        seconds=time.monotonic() - clock,
        machine=machine,
        plan=plan.describe(),
        sizes=results.sizes,
        rows=results.rows,
        ratios=results.ratios,
        checks=results.checks,
        stampede=results.stampede,
        sanity=results.sanity,
        tasks=tasks,
        tasks_error=tasks_error,
        artifacts=artifacts,
        artifacts_error=artifacts_error,
        sections=sections,
    )
    print(render_console(report))
    if docs is not None:
        docs.write_text(render_markdown(report))
        _progress(f"wrote {docs}")
    broken = tasks_error or artifacts_error or any(section.error for section in sections)
    return 1 if broken else 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every child process is stopped and temp dirs removed.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run."""
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tenth of the calls")
    parser.add_argument("--docs", default=None, help="where to write the Markdown report")
    args = parser.parse_args(argv)
    plan = _QUICK if args.quick else Plan()
    task_plan = _QUICK_TASKS if args.quick else TaskPlan()
    if args.docs is None:
        docs: Path | None = None if args.quick else _DEFAULT_DOCS
    else:
        docs = Path(args.docs) if args.docs else None
    artifact_plan = _QUICK_ARTIFACTS if args.quick else ArtifactPlan()
    kind_plans = (
        (_QUICK_PROFILE, _QUICK_ANALYTICS) if args.quick else (ProfilePlan(), AnalyticsPlan())
    )
    reads_load_plan = _QUICK_READS_LOAD if args.quick else ReadsLoadPlan()
    return run(plan, task_plan, artifact_plan, kind_plans, reads_load_plan, docs)


if __name__ == "__main__":
    sys.exit(main())
