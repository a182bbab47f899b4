"""How long a worker takes to start, and how much memory it holds before its first task.

``python -m bench.worker_startup [--repo DIR] [--runs N]`` starts ``python -m workers`` from
``DIR`` (default: this checkout) against a private vhost of the local RabbitMQ and a fresh
SQLite database, N times, and prints for each run the seconds until the worker wrote its
ready file (it consumes from then on) and the resident memory of the worker's main process
and of its pool children at that moment, read from ``/proc``. It also counts the modules of
the project a bare ``import workers.app`` loads. Pointing ``--repo`` at a checkout of an
older commit measures the same figures before a change (issue #10: fewer imports).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.workers._stack import private_vhost

_OURS = ("core", "server", "cache_sidecar", "workers")
_COUNT = (
    "import json, sys, workers.app; print(json.dumps(sorted(m for m in sys.modules"
    f" if m.split('.')[0] in {_OURS!r})))"
)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


def _migrate(repo: Path, database_url: str) -> None:
    # The server migrates the schema; the worker expects it to be there.
    code = (
        "import sys; sys.path.insert(0, '.');"
        "from importlib import import_module;"
        "db = import_module('core.db' if __import__('os').path.isdir('core/db') else 'server.db');"
        f"db.migrate(db.make_engine({database_url!r}, pool_size=1))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True, timeout=120)


def measure(repo: Path, broker_url: str, workdir: Path) -> dict[str, float]:
    """Start one worker from ``repo``; its start-up time and memory at readiness."""
    database_url = f"sqlite:///{workdir / 'startup.db'}"
    _migrate(repo, database_url)
    ready = workdir / "worker.ready.json"
    env = {
        **os.environ,
        "AGENTIC_BROKER_URL": broker_url,
        "DATABASE_URL": database_url,
        "AGENTIC_READY_FILE": str(ready),
        "AGENTIC_WORKER_CONCURRENCY": "2",
        # A free port: the measured start-up includes the metrics endpoint, not a clash.
        "AGENTIC_WORKER_METRICS_ADDRESS": "127.0.0.1:0",
        "AGENTIC_LOG_LEVEL": "WARNING",
    }
    begin = time.monotonic()
    with (workdir / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers"],
            cwd=repo,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = begin + 120
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((workdir / "worker.log").read_text(errors="replace"))
            time.sleep(0.01)
        seconds = time.monotonic() - begin
        main_kib = _rss_kib(process.pid)
        children_kib = sum(_rss_kib(c) for c in _children(process.pid))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        ready.unlink(missing_ok=True)
    return {"seconds": seconds, "main_mib": main_kib / 1024, "children_mib": children_kib / 1024}


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    repo: Path = args.repo.resolve()
    modules = json.loads(
        subprocess.run(
            [sys.executable, "-c", _COUNT],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    runs: list[dict[str, float]] = []
    with private_vhost() as broker_url, tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            runs.append(measure(repo, broker_url, Path(tmp)))
    print(f"repo {repo}: `import workers.app` loads {len(modules)} of our modules")
    for key in ("seconds", "main_mib", "children_mib"):
        values = [r[key] for r in runs]
        print(f"  {key}: median {statistics.median(values):.2f} (runs: {values})")


if __name__ == "__main__":
    main()
