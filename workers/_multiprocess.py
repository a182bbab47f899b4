"""The worker's ``/metrics``: prometheus_client's multiprocess mode across the prefork pool.

Task attempts run in pool children, which Celery forks from the main process and replaces
when one dies; an HTTP server in a child would show that child's counts only, and lose
them with it. So, before anything forks, the main process points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh private directory: every metric constructed from
then on (``workers._metrics``, imported with ``workers.app``) writes to a memory-mapped
file per process there, which survives the process, so a child killed with -9 loses
nothing it counted. The main process serves the sum of all files
(``MultiProcessCollector``) and its own liveness gauge.

The directory is private (``mkdtemp``) so no stale file of an earlier run, or of another
worker on the host, is summed in, and it is removed when the main process exits.

Children that died are marked with ``multiprocess.mark_process_dead`` (their live gauges'
files go; counters and histograms stay). Celery has no parent-side signal for a pool
child's exit (``worker_process_shutdown`` runs in the child, and not at all on kill -9),
so each scrape sweeps the files of processes that no longer exist first.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from core.serving import MetricsEndpoint, start_metrics

_PID = re.compile(r"_(\d+)\.db$")


def use_private_directory() -> Path:
    """Switch this process, and the children it forks, to multiprocess mode in a fresh
    directory (removed at exit); call it before any metric of the pool is constructed."""
    directory = Path(tempfile.mkdtemp(prefix="agentic-worker-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # prometheus_client picks its value class when first imported (here that is before
    # the configuration is read); metrics constructed from now on use the mmap files.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # untyped
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not a pool child exiting through atexit
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _WorkerCollector:
    """``celery_worker_up{hostname}`` and the sweep of dead children before each scrape."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self.hostname: str | None = None
        """Celery's node name, set once the worker consumes; until then the gauge is 0."""

    def collect(self) -> Iterator[Metric]:
        self.sweep()
        up = GaugeMetricFamily(
            "celery_worker_up",
            "1 while this worker's main process consumes its queue",
            labels=["hostname"],
        )
        up.add_metric([self.hostname or ""], 1.0 if self.hostname else 0.0)
        yield up

    def sweep(self) -> None:
        """Mark the processes whose files remain but which no longer exist as dead."""
        pids = {int(m.group(1)) for p in self._directory.glob("*.db") if (m := _PID.search(p.name))}
        for pid in pids - {os.getpid()}:
            if not _alive(pid):
                multiprocess.mark_process_dead(pid, str(self._directory))  # type: ignore[no-untyped-call]


class WorkerMetrics:
    """The main process's endpoint: every process's counts, and the liveness gauge."""

    def __init__(self, address: str, directory: Path) -> None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(directory))  # type: ignore[no-untyped-call]
        self._collector = _WorkerCollector(directory)
        registry.register(self._collector)
        self.endpoint: MetricsEndpoint | None = start_metrics(address, registry)

    @property
    def port(self) -> int | None:
        """The bound port (None when disabled)."""
        return self.endpoint.port if self.endpoint else None

    def consuming(self, hostname: str) -> None:
        """The worker ``hostname`` consumes its queue: ``celery_worker_up`` is 1."""
        self._collector.hostname = hostname
