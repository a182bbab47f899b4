"""The bare chain: two minimal grpc.aio server processes and a pymemcache get, no logic.

Run as ``python -m bench._bare`` with the role in the environment (the benchmark
starts it through ``tests._support.start_service``, which sets ``AGENTIC_READY_FILE``)::

    BENCH_ROLE=hop1 BENCH_UPSTREAM=127.0.0.1:<hop2 port>
        forwards the raw request bytes to hop2 (a grpc.aio channel, identity
        serializers, the same 0.25 s deadline the API server gives its sidecar calls)
        and returns hop2's raw response bytes (a failure: hop2's status code).
    BENCH_ROLE=hop2 BENCH_MEMCACHED=127.0.0.1:<port> BENCH_MEMCACHED_MODE=thread|loop
        one pymemcache ``get`` of ``key_for(request bytes)`` and returns the value bytes.
        ``thread``: in a pool of 8 threads with a client per thread, the way the sidecar
        runs its blocking Memcached calls; ``loop``: on the event loop, one client.

Both are ``grpc.aio.server()`` with one ``method_handlers_generic_handler`` whose handler
has no (de)serializers: requests and responses stay ``bytes``. No interceptor,
validation, metrics or health service. The ready file gets ``{"grpc_port": port}``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from pymemcache.client.base import Client

from bench._serve import serve_until_stopped

SERVICE = "bench.Bare"
METHOD = f"/{SERVICE}/Get"
"""Full method name of the one RPC of both hops."""

# Same as the API server's AGENTIC_CACHE_TIMEOUT_SECONDS default and the sidecar's
# AGENTIC_MEMCACHED_IO_THREADS / timeouts defaults, so the hops carry the same settings.
_UPSTREAM_TIMEOUT_SECONDS = 0.25
_IO_THREADS = 8
_MEMCACHED_CONNECT_TIMEOUT_SECONDS = 0.05
_MEMCACHED_TIMEOUT_SECONDS = 0.1


def key_for(request: bytes) -> str:
    """The Memcached key hop2 reads for a request: hex, so any bytes make a legal key."""
    return "bench:" + request.hex()


def _memcached_client(address: str) -> Client:
    host, _, port = address.rpartition(":")
    return Client(
        (host, int(port)),
        connect_timeout=_MEMCACHED_CONNECT_TIMEOUT_SECONDS,
        timeout=_MEMCACHED_TIMEOUT_SECONDS,
        no_delay=True,
        default_noreply=False,
    )


def _hop1(upstream: str) -> tuple[Any, list[Any]]:
    channel = grpc.aio.insecure_channel(upstream)
    # No serializers: bytes in, bytes out. Registered like the generated stubs (and so
    # the API server's sidecar client) register theirs.
    forward = channel.unary_unary(METHOD, _registered_method=True)

    async def get(request: bytes, context: Any) -> bytes:
        try:
            response: bytes = await forward(request, timeout=_UPSTREAM_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            # Only on failure: pass hop2's status on (e.g. DEADLINE_EXCEEDED) instead of
            # the UNKNOWN an unhandled exception becomes, so the report says what failed.
            await context.abort(exc.code(), exc.details() or "")
            raise  # abort raises; this keeps type checkers and readers certain
        return response

    return get, [channel]


def _hop2(memcached: str, mode: str) -> tuple[Any, list[Any]]:
    if mode == "loop":
        client = _memcached_client(memcached)

        async def get_on_loop(request: bytes, context: Any) -> bytes:
            value: bytes | None = client.get(key_for(request))
            return value or b""

        return get_on_loop, []
    if mode != "thread":
        raise SystemExit(f"BENCH_MEMCACHED_MODE must be thread or loop, not {mode!r}")
    local = threading.local()
    executor = ThreadPoolExecutor(_IO_THREADS, thread_name_prefix="memcached-io")

    def blocking_get(key: str) -> bytes:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = _memcached_client(memcached)
        value: bytes | None = client.get(key)
        return value or b""

    async def get_in_thread(request: bytes, context: Any) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, blocking_get, key_for(request))

    return get_in_thread, [executor]


async def _serve(env: dict[str, str]) -> None:
    role = env.get("BENCH_ROLE", "")
    if role == "hop1":
        handler, resources = _hop1(env["BENCH_UPSTREAM"])
    elif role == "hop2":
        handler, resources = _hop2(env["BENCH_MEMCACHED"], env.get("BENCH_MEMCACHED_MODE", ""))
    else:
        raise SystemExit(f"BENCH_ROLE must be hop1 or hop2, not {role!r}")
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Get": grpc.unary_unary_rpc_method_handler(handler)}
            ),
        )
    )
    await serve_until_stopped(server, env.get("AGENTIC_READY_FILE", ""))
    for resource in resources:
        if isinstance(resource, ThreadPoolExecutor):
            resource.shutdown(wait=False, cancel_futures=True)
        else:
            await resource.close()


def main() -> int:
    """Serve one hop until SIGTERM."""
    asyncio.run(_serve(dict(os.environ)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
