"""The bare ByteStream peer: Write and Read of files with no logic, the artifact rows' floor.

Run as ``python -m bench._bare_bytestream`` with ``BENCH_DIR`` (where the files go) in the
environment; the benchmark starts it through ``tests._processes.start_service``, which
sets ``AGENTIC_READY_FILE`` (it gets ``{"grpc_port": port}``).

It answers the two byte methods of ``agentic.artifacts.v1.ArtifactService`` under their
own names and with the generated message classes, so the benchmark drives it and the API
server with the same stub and the same client code:

- ``Write`` (client stream): appends each WriteRequest's ``data`` to the file named by the
  last path segment of the first message's ``resource_name`` (``uploads/<x>`` -> ``x``),
  then answers ``committed_size``. No offsets checked, no hash, no fsync, no database.
- ``Read`` (server stream): the file named by ``artifacts/<x>`` in 1 MiB ReadResponses.

One ``grpc.aio.server()`` with one ``method_handlers_generic_handler``; no interceptor,
authentication, validation, metrics, health or reflection. The file IO runs on the event
loop itself (a 1 MiB write or read of the page cache blocks it for well under a
millisecond), so there is no thread hand-off either: the least a Python gRPC servicer can
do per chunk.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from agentic.artifacts.v1 import artifacts_pb2 as pb

from bench._serve import serve_until_stopped

SERVICE = "agentic.artifacts.v1.ArtifactService"
CHUNK_BYTES = 1024 * 1024
"""Read's chunk: the API server's (``core.objects.MAX_READ_CHUNK_BYTES``)."""


def _file(directory: Path, resource_name: str) -> Path:
    # The last segment only: the benchmark names the files, nothing else reaches this port.
    return directory / resource_name.rsplit("/", 1)[-1]


def _handlers(directory: Path) -> grpc.GenericRpcHandler:
    async def write(requests: AsyncIterator[pb.WriteRequest], context: Any) -> pb.WriteResponse:
        written = 0
        handle = None
        try:
            async for request in requests:
                if handle is None:
                    handle = _file(directory, request.resource_name).open("wb")
                handle.write(request.data)
                written += len(request.data)
        finally:
            if handle is not None:
                handle.close()
        return pb.WriteResponse(committed_size=written)

    async def read(request: pb.ReadRequest, context: Any) -> AsyncIterator[pb.ReadResponse]:
        with _file(directory, request.resource_name).open("rb") as handle:
            while piece := handle.read(CHUNK_BYTES):
                yield pb.ReadResponse(data=piece)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Write": grpc.stream_unary_rpc_method_handler(
                write,
                request_deserializer=pb.WriteRequest.FromString,
                response_serializer=pb.WriteResponse.SerializeToString,
            ),
            "Read": grpc.unary_stream_rpc_method_handler(
                read,
                request_deserializer=pb.ReadRequest.FromString,
                response_serializer=pb.ReadResponse.SerializeToString,
            ),
        },
    )


async def _serve(env: dict[str, str]) -> None:
    directory = Path(env["BENCH_DIR"])
    # The API server's message limits (AGENTIC_MAX_*_MESSAGE_BYTES defaults): a 1 MiB
    # chunk and its envelope fit either way, so both peers accept the same streams.
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
    )
    server.add_generic_rpc_handlers((_handlers(directory),))
    await serve_until_stopped(server, env.get("AGENTIC_READY_FILE", ""))


def main() -> int:
    """Serve until SIGTERM."""
    Path(os.environ["BENCH_DIR"]).mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve(dict(os.environ)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
