"""Running a gRPC process: its metrics endpoint, and the wait for SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from core.serving._ready import write_ready_file

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class MetricsEndpoint:
    """A running Prometheus ``/metrics`` HTTP server (a daemon thread)."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.port: int = int(server.server_port)
        """The bound port: the free one picked when the address asked for port 0."""

    async def close(self) -> None:
        """Stop serving and release the port."""
        await asyncio.to_thread(self._server.shutdown)  # blocks until its loop exits
        self._server.server_close()


def start_metrics(address: str, registry: CollectorRegistry = REGISTRY) -> MetricsEndpoint | None:
    """Serve ``registry`` on ``address`` (``host:port``, port 0 picks a free port).

    An empty address turns metrics off: None.
    """
    if not address:
        return None
    host, _, port = address.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    return MetricsEndpoint(server)


async def wait_for_stop_signal(
    ready_file: str | Path | None,
    ready: dict[str, object],
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
) -> signal.Signals:
    """Announce a serving process, then wait until it is told to stop; return the signal.

    The handlers are installed before the ready file is written: a supervisor that
    signals as soon as it reads the file gets a graceful stop, never the default handler's
    abrupt exit. They stay installed, so a second signal during the grace period is
    absorbed. ``ready`` is written to ``ready_file`` as JSON when a path is given.
    """
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    if ready_file:
        await asyncio.to_thread(write_ready_file, ready_file, **ready)
    return await received
