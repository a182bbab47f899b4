"""How a process serves: one mechanism for the ready file, health and the stop signals.

- ``write_ready_file``: the JSON a supervisor or test polls for, written atomically
  (the API server: ``grpc_port``, ``metrics_port``; the sidecar also ``grpc_address``,
  its ``unix:`` socket or ``host:port``, ``grpc_port`` null on a socket; a worker: ``pid``).
- ``DependencyHealth`` and ``Dependency``: grpc.health.v1 that follows real dependencies,
  each process bringing its own checks, NOT_SERVING from shutdown on.
- ``start_metrics``: the Prometheus endpoint from a ``host:port`` address.
- ``wait_for_stop_signal``: SIGTERM/SIGINT handlers, the ready file, then the wait.
- ``tune_malloc``: glibc's malloc set for 1 MiB messages and 8 MiB parts, first thing in
  every server and worker process (``GLIBC_TUNABLES`` overrides it).

Each process keeps ``create_server`` (build: the health object is wired there) apart
from ``serve`` (run: metrics, the ready file, the wait, the shutdown order).
"""

from typing import TYPE_CHECKING

from core._lazy import lazy_attributes
from core.serving._ready import write_ready_file

if TYPE_CHECKING:
    from core.serving._health import DEPENDENCY_UP, Dependency, DependencyHealth
    from core.serving._malloc import tune_malloc
    from core.serving._process import (
        STOP_SIGNALS,
        MetricsEndpoint,
        start_metrics,
        wait_for_stop_signal,
    )

# Loaded on first use: a worker needs only the ready file, and the rest pulls in gRPC's
# health service and the metrics server (PEP 562).
_LAZY = {
    "DEPENDENCY_UP": "core.serving._health",
    "Dependency": "core.serving._health",
    "DependencyHealth": "core.serving._health",
    "STOP_SIGNALS": "core.serving._process",
    "MetricsEndpoint": "core.serving._process",
    "start_metrics": "core.serving._process",
    "wait_for_stop_signal": "core.serving._process",
    "tune_malloc": "core.serving._malloc",
}


__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "DEPENDENCY_UP",
    "STOP_SIGNALS",
    "Dependency",
    "DependencyHealth",
    "MetricsEndpoint",
    "start_metrics",
    "tune_malloc",
    "wait_for_stop_signal",
    "write_ready_file",
]
