"""Health that reflects real dependencies (grpc.health.v1), checked in the background.

Names reported on the API server's health service:

- ``""`` and each service name: SERVING while the server runs and its database answers;
  NOT_SERVING when the database does not (nothing can be served) and from SIGTERM on
  (load balancers stop routing before connections close).
- ``dependency:database``, ``dependency:broker``: each dependency on its own, for
  operators and alerts. A broker outage does not make the server NOT_SERVING: Submit
  keeps accepting tasks into the outbox and WatchTask keeps polling the database; work
  resumes by itself when the broker is back. Not reported when no broker is configured.

The same verdicts are exported as ``agentic_dependency_up{dependency}`` (1 or 0).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import health, health_pb2
from prometheus_client import Gauge

log = logging.getLogger(__name__)

DEPENDENCY_UP = Gauge(
    "agentic_dependency_up", "Whether a dependency answered its last check.", ("dependency",)
)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DependencyHealth:
    """Checks the database (and the broker's connection) every ``interval_seconds``."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        services: Sequence[str],
        *,
        database_ok: Callable[[], Awaitable[bool]],
        broker_ok: Callable[[], bool] | None,
        interval_seconds: float = 2.0,
    ) -> None:
        self._servicer = servicer
        self._services = ("", *services)
        self._database_ok = database_ok
        self._broker_ok = broker_ok
        self._interval = interval_seconds
        self._running = False
        self._database = True
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Check once, report, and keep checking in the background."""
        self._running = True
        await self.check()
        self._task = asyncio.create_task(self._loop(), name="dependency-health")

    async def stop_serving(self) -> None:
        """NOT_SERVING for good (shutdown); the checks stop."""
        self._running = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._report()

    async def check(self) -> None:
        """Run every check now and report the result."""
        try:
            database = await asyncio.wait_for(self._database_ok(), self._interval)
        except Exception:  # a timeout or any driver error: the database did not answer
            database = False
        if database != self._database:
            log.warning("database %s", "answers again" if database else "does not answer")
        self._database = database
        DEPENDENCY_UP.labels("database").set(1 if database else 0)
        await self._servicer.set("dependency:database", _SERVING if database else _NOT_SERVING)
        if self._broker_ok is not None:
            broker = self._broker_ok()
            DEPENDENCY_UP.labels("broker").set(1 if broker else 0)
            await self._servicer.set("dependency:broker", _SERVING if broker else _NOT_SERVING)
        await self._report()

    async def _report(self) -> None:
        status = _SERVING if self._running and self._database else _NOT_SERVING
        for name in self._services:
            await self._servicer.set(name, status)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()
