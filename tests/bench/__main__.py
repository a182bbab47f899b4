"""``python -m tests.bench`` (``make bench``): measure, print the table, write the docs.

Options: ``--quick`` (a tenth of the calls, for trying the harness; does not write the
docs unless ``--docs`` is given) and ``--docs PATH`` (default docs/benchmarks.md;
``--docs ''`` writes nothing). Exit status 0 whether targets pass or fail; non-zero
only when the run itself breaks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType

from tests._support import REPO
from tests.bench._cpu import OthersMeter
from tests.bench._report import Machine, Report, render_console, render_markdown
from tests.bench._stack import Stack, running_stack
from tests.bench._suite import Plan, measure

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

    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, connect_timeout=5) as conn:
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


def run(plan: Plan, docs: Path | None) -> int:
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
        _progress("stopping")
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
    )
    print(render_console(report))
    if docs is not None:
        docs.write_text(render_markdown(report))
        _progress(f"wrote {docs}")
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every child process is stopped and temp dirs removed.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run."""
    signal.signal(signal.SIGTERM, _terminate)
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tenth of the calls")
    parser.add_argument("--docs", default=None, help="where to write the Markdown report")
    args = parser.parse_args(argv)
    plan = _QUICK if args.quick else Plan()
    if args.docs is None:
        docs: Path | None = None if args.quick else _DEFAULT_DOCS
    else:
        docs = Path(args.docs) if args.docs else None
    return run(plan, docs)


if __name__ == "__main__":
    sys.exit(main())
