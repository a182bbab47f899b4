"""Health that reflects real dependencies (grpc.health.v1), checked in the background.

One mechanism for every gRPC process; each brings its own checks. Names reported:

- ``""`` and each served service name: SERVING while the process runs and every
  *required* dependency answers; NOT_SERVING when one does not (nothing can be served)
  and from shutdown on (load balancers stop routing before connections close).
- ``dependency:<name>`` for each dependency, required or not: its own verdict, for
  operators and alerts. An optional dependency that fails does not make the process
  NOT_SERVING (the API server keeps accepting tasks into the outbox without a broker;
  the sidecar keeps answering reads without its events consumer).

The same verdicts are exported as ``agentic_dependency_up{dependency}`` (1 or 0).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health, health_pb2
from prometheus_client import Gauge

log = logging.getLogger(__name__)

DEPENDENCY_UP = Gauge(
    "agentic_dependency_up", "Whether a dependency answered its last check.", ("dependency",)
)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Dependency:
    """One thing a process needs, and how to ask whether it answers."""

    name: str
    """Reported as ``dependency:<name>`` and as the ``dependency`` label."""
    check: Callable[[], bool | Awaitable[bool]]
    """True when the dependency answers. A coroutine is cut off after the check timeout;
    a plain function must be quick (it runs on the event loop)."""
    required: bool = True
    """Whether the process is NOT_SERVING while this dependency does not answer."""


class DependencyHealth:
    """Checks every dependency every ``interval_seconds`` and reports the verdicts."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        services: Sequence[str],
        dependencies: Sequence[Dependency],
        *,
        interval_seconds: float = 2.0,
        timeout_seconds: float | None = None,
    ) -> None:
        """``timeout_seconds`` bounds an asynchronous check (default: the interval, so a
        hung check never delays the next round)."""
        self._servicer = servicer
        self._services = ("", *services)
        self._dependencies = tuple(dependencies)
        self._interval = interval_seconds
        self._timeout = interval_seconds if timeout_seconds is None else timeout_seconds
        self._running = False
        self._up: dict[str, bool] = {}
        self._reported: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        """Whether the served names report SERVING now."""
        return self._running and all(
            self._up.get(d.name, True) for d in self._dependencies if d.required
        )

    async def start(self) -> None:
        """Check once, report, and keep checking in the background."""
        self._running = True
        await self.check()
        self._task = asyncio.create_task(self._loop(), name="dependency-health")

    async def stop_serving(self) -> None:
        """NOT_SERVING for good (shutdown); the checks stop.

        The ``dependency:*`` entries keep their last verdict: the process is going away,
        its dependencies are not.
        """
        self._running = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._report()

    async def check(self) -> None:
        """Run every check now and report the result."""
        for dependency in self._dependencies:
            up = await self._answers(dependency)
            before = self._up.get(dependency.name)
            # A change is news; so is a required dependency that is down from the start.
            # An optional connection still being made at start-up is not.
            if before is not None and up != before:
                if up:
                    log.warning("%s answers again", dependency.name)
                else:
                    log.warning("%s does not answer", dependency.name)
            elif before is None and not up and dependency.required:
                log.warning("%s does not answer", dependency.name)
            self._up[dependency.name] = up
            DEPENDENCY_UP.labels(dependency.name).set(1 if up else 0)
            await self._set(f"dependency:{dependency.name}", _status(up))
        await self._report()

    async def _answers(self, dependency: Dependency) -> bool:
        try:
            verdict = dependency.check()
            if inspect.isawaitable(verdict):
                verdict = await asyncio.wait_for(verdict, self._timeout)
            return bool(verdict)
        except Exception:  # a timeout or any driver error: the dependency did not answer
            return False

    async def _report(self) -> None:
        status = _status(self.serving)
        for name in self._services:
            await self._set(name, status)

    async def _set(
        self, name: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        # Only changes: every set() wakes each Watch stream on that name, and the sidecar
        # checks twenty times a second.
        if self._reported.get(name) != status:
            self._reported[name] = status
            await self._servicer.set(name, status)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()


def _status(up: bool) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    return _SERVING if up else _NOT_SERVING
