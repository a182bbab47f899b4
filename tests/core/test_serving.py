"""core.serving, in-process: the ready file, dependency health, metrics, the stop signal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from grpc_health.v1 import health, health_pb2

from core.serving import (
    Dependency,
    DependencyHealth,
    start_metrics,
    wait_for_stop_signal,
    write_ready_file,
)
from tests._support import wait_for

T = TypeVar("T")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_the_ready_file_is_the_fields_as_json_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "api.ready.json"
    write_ready_file(path, grpc_port=5, metrics_port=None)
    write_ready_file(path, grpc_port=6, metrics_port=7)  # replaces the whole object
    assert json.loads(path.read_text()) == {"grpc_port": 6, "metrics_port": 7}
    assert os.listdir(tmp_path) == ["api.ready.json"]


class Flag:
    def __init__(self) -> None:
        self.up = True

    def __call__(self) -> bool:
        return self.up


def test_a_required_dependency_gates_serving_an_optional_one_only_reports_itself() -> None:
    database, broker = Flag(), Flag()

    async def scenario() -> None:
        servicer = health.aio.HealthServicer()
        checks = DependencyHealth(
            servicer,
            ["svc.v1.S"],
            [Dependency("database", database), Dependency("broker", broker, required=False)],
            interval_seconds=60,
        )

        def status(name: str) -> int:
            return int(servicer._server_status[name])

        await checks.start()
        try:
            assert [status(n) for n in ("", "svc.v1.S", "dependency:database")] == [SERVING] * 3
            broker.up = False
            await checks.check()
            assert status("dependency:broker") == NOT_SERVING
            assert status("") == SERVING
            database.up = False
            await checks.check()
            assert [status(n) for n in ("", "svc.v1.S", "dependency:database")] == [NOT_SERVING] * 3
            database.up = broker.up = True
            await checks.check()
            assert status("") == status("dependency:broker") == SERVING
        finally:
            await checks.stop_serving()
        assert status("") == status("svc.v1.S") == NOT_SERVING
        assert status("dependency:database") == SERVING, "the dependency is not going away"

    run(scenario())


def test_an_async_check_that_hangs_or_raises_is_a_dependency_that_does_not_answer() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    async def raises() -> bool:
        raise ConnectionError("refused")

    async def scenario() -> None:
        servicer = health.aio.HealthServicer()
        checks = DependencyHealth(
            servicer,
            [],
            [Dependency("slow", hangs), Dependency("broken", raises)],
            interval_seconds=0.05,
        )
        await checks.start()
        await checks.stop_serving()
        assert servicer._server_status["dependency:slow"] == NOT_SERVING
        assert servicer._server_status["dependency:broken"] == NOT_SERVING

    run(scenario())


def test_metrics_on_port_0_report_the_port_bound_and_an_empty_address_is_off() -> None:
    assert start_metrics("") is None
    endpoint = start_metrics("127.0.0.1:0")
    assert endpoint is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5) as r:
            assert r.status == 200
    finally:
        run(endpoint.close())


def test_the_ready_file_is_written_after_the_handlers_so_a_prompt_sigterm_is_graceful(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ready.json"

    async def scenario() -> signal.Signals:
        async def supervisor() -> None:
            # The file is written from a thread: poll for it off the loop, like a supervisor.
            await asyncio.to_thread(wait_for, path.exists, timeout=10, message="the ready file")
            os.kill(os.getpid(), signal.SIGTERM)  # the moment the file appears

        watching = asyncio.create_task(supervisor())
        received = await wait_for_stop_signal(path, {"pid": 1})
        await watching
        return received

    assert run(scenario()) is signal.SIGTERM
    assert json.loads(path.read_text()) == {"pid": 1}
