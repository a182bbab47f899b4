"""How the benchmark's own gRPC servers (bare hops, bare ByteStream, naive Submit) serve.

``serve_until_stopped`` binds a loopback port, starts the server, writes the ready file
``tests._processes.start_service`` waits for (``{"grpc_port": port}``, atomically), and
serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal

import grpc

from core.serving import write_ready_file

__all__ = ["serve_until_stopped"]

_STOP_GRACE_SECONDS = 0.5


async def serve_until_stopped(server: grpc.aio.Server, ready_file: str) -> None:
    """Serve ``server`` on a free 127.0.0.1 port until a stop signal, then stop it."""
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file:
        await asyncio.to_thread(write_ready_file, ready_file, grpc_port=port)
    await stop.wait()
    await server.stop(_STOP_GRACE_SECONDS)
