"""The submit endpoint a team would write by hand (issue 17, "submits, the seeds' way").

The seeds' Flask handler ported to gRPC: ``SubmitProbe`` only calls Celery's
``send_task`` with the seeds' settings (Celery's defaults: no publisher confirms, no
database, no idempotency) and returns the new task id at once. It serves
``agentic.tasks.v1.TaskService`` so that the benchmark's client and stub are the same
as for the real server; every other method is UNIMPLEMENTED.

Two forms, chosen by ``BENCH_MODE``:
- ``sync``: ``grpc.server`` with a thread pool of ``BENCH_THREADS`` (default 16), the
  plain port of a threaded Flask app;
- ``aio``: ``grpc.aio.server``, publishing on its event loop (``send_task`` is blocking
  and the handler calls it directly, as a naive port does).

``python -m bench._naive_submit`` with ``AGENTIC_BROKER_URL``, ``AGENTIC_TASK_QUEUE`` and
``AGENTIC_READY_FILE`` (written with ``grpc_port`` once serving); SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from agentic.tasks.v1 import tasks_pb2 as pb
from celery import Celery

from bench._serve import serve_until_stopped
from core.serving import write_ready_file

__all__ = ["NAIVE_TASK", "make_naive_app"]

NAIVE_TASK = "bench.naive.probe"
_SERVICE = pb.DESCRIPTOR.services_by_name["TaskService"].full_name


def make_naive_app(broker_url: str, queue: str) -> Celery:
    """Celery as the seeds configure it: the broker URL and JSON, nothing else."""
    app = Celery("bench-naive", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
    )
    return app


def _publish(app: Celery, queue: str, request: pb.SubmitProbeRequest) -> pb.SubmitProbeResponse:
    task_id = str(uuid.uuid4())
    app.send_task(
        NAIVE_TASK,
        args=[request.probe.steps, request.probe.step_millis],
        task_id=task_id,
        queue=queue,
    )
    return pb.SubmitProbeResponse(
        task=pb.Task(id=task_id, kind=pb.TASK_KIND_PROBE, state=pb.TASK_STATE_PENDING)
    )


def _handler(behaviour: Any) -> grpc.GenericRpcHandler:
    """TaskService with SubmitProbe only (grpc answers UNIMPLEMENTED for the rest)."""
    method = grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=pb.SubmitProbeRequest.FromString,
        response_serializer=pb.SubmitProbeResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(_SERVICE, {"SubmitProbe": method})


def _serve_sync(app: Celery, queue: str, ready_file: str, threads: int) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=threads))

    def submit(request: pb.SubmitProbeRequest, context: object) -> pb.SubmitProbeResponse:
        return _publish(app, queue, request)

    server.add_generic_rpc_handlers((_handler(submit),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if ready_file:
        write_ready_file(ready_file, grpc_port=port)
    stop.wait()
    server.stop(0.5).wait()


async def _serve_aio(app: Celery, queue: str, ready_file: str) -> None:
    server = grpc.aio.server()

    async def submit(request: pb.SubmitProbeRequest, context: object) -> pb.SubmitProbeResponse:
        return _publish(app, queue, request)

    server.add_generic_rpc_handlers((_handler(submit),))
    await serve_until_stopped(server, ready_file)


def main() -> int:
    """Serve until SIGTERM."""
    queue = os.environ["AGENTIC_TASK_QUEUE"]
    app = make_naive_app(os.environ["AGENTIC_BROKER_URL"], queue)
    ready_file = os.environ.get("AGENTIC_READY_FILE", "")
    mode = os.environ.get("BENCH_MODE", "sync")
    try:
        if mode == "sync":
            _serve_sync(app, queue, ready_file, int(os.environ.get("BENCH_THREADS", "16")))
        elif mode == "aio":
            asyncio.run(_serve_aio(app, queue, ready_file))
        else:
            raise SystemExit(f"BENCH_MODE must be sync or aio, not {mode!r}")
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
