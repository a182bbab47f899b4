"""The batched submit path: group commit, pipelined confirmed publishes, batched deletes.

Unit level: ``Batcher`` coalesces concurrent calls and keeps each caller's own outcome;
``TaskStore.submit_many`` resolves every request of a batch as a lone ``submit`` would
(on SQLite and PostgreSQL); ``TaskPublisher`` confirms a burst of publishes on a private
vhost and refuses at once when the broker is unreachable. End to end: a real server
under concurrent submits confirms and keeps every task, and concurrent resubmits of one
request_id resolve to one task.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from kombu.connection import Connection
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError

from core.db import TaskEventRow, TaskOutboxRow, TaskRow, make_engine, migrate
from core.db import _engine as engine_module
from core.rpc import AlreadyExists
from core.tasks import BrokerSettings, OutboxItem, TaskPublisher, declare_topology
from server.tasks import TaskStore
from server.tasks._batch import Batcher
from server.tasks._store import NewTask, Written
from tests._identity import authorized_aio_channel
from tests._support import fresh_database, libpq_url, postgres_database
from tests.workers._stack import Stack, private_vhost, stack

# --- Batcher --------------------------------------------------------------------------


def test_batcher_coalesces_concurrent_calls_and_keeps_each_outcome() -> None:
    flushes: list[list[int]] = []

    async def flush(values: list[int]) -> list[int | Exception]:
        flushes.append(values)
        await asyncio.sleep(0.01)  # a flush in progress: later calls queue behind it
        return [ValueError(v) if v % 10 == 3 else v * 2 for v in values]

    async def scenario() -> list[int | BaseException]:
        batcher: Batcher[int, int] = Batcher(flush, max_batch=8, max_concurrent=1)
        return await asyncio.gather(*(batcher.call(v) for v in range(40)), return_exceptions=True)

    results = asyncio.run(scenario())
    for value, result in enumerate(results):
        if value % 10 == 3:
            assert isinstance(result, ValueError)
            assert result.args == (value,)
        else:
            assert result == value * 2
    assert sorted(v for batch in flushes for v in batch) == list(range(40))
    assert all(len(batch) <= 8 for batch in flushes)
    assert len(flushes) < 40, "concurrent calls should share flushes"


def test_batcher_fails_every_call_of_a_failed_flush_and_recovers() -> None:
    calls = 0

    async def flush(values: list[str]) -> list[str | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return [v.upper() for v in values]

    async def scenario() -> tuple[list[str | BaseException], str]:
        batcher: Batcher[str, str] = Batcher(flush, max_batch=100)
        first = await asyncio.gather(*(batcher.call(v) for v in "abc"), return_exceptions=True)
        return first, await batcher.call("d")

    first, after = asyncio.run(scenario())
    assert all(isinstance(r, ConnectionError) for r in first)
    assert after == "D"


def test_batcher_serves_a_call_made_as_the_previous_flush_ends() -> None:
    async def flush(values: list[int]) -> list[int | Exception]:
        return list(values)

    async def scenario() -> tuple[int, int]:
        batcher: Batcher[int, int] = Batcher(flush, max_batch=10, max_concurrent=1)
        first = await batcher.call(1)
        # Resumed by the first flush's result, before its task has fully ended.
        return first, await asyncio.wait_for(batcher.call(2), 5)

    assert asyncio.run(scenario()) == (1, 2)


# --- TaskStore.submit_many ------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A migrated database of each backend."""
    workdir = tmp_path_factory.mktemp(f"submit-many-{request.param}")
    with ExitStack() as exits:
        url = exits.enter_context(fresh_database(request.param, workdir, "tasks"))
        engine = make_engine(url, pool_size=4)
        exits.callback(engine.dispose)
        migrate(engine)
        yield engine


def _new(request_id: str, hash_: str = "h1", priority: int = 0) -> NewTask:
    return NewTask(
        kind=pb.TASK_KIND_PROBE,
        spec=pb.ProbeSpec(steps=1).SerializeToString(),
        owner_id="alice",
        priority=priority,
        request_id=request_id,
        request_hash=hash_,
    )


def _rows(engine: Engine, request_ids: list[str]) -> dict[str, tuple[str, int, int]]:
    """request_id -> (task id, events, outbox rows)."""
    with engine.connect() as conn:
        tasks = dict(
            conn.execute(
                select(TaskRow.request_id, TaskRow.id).where(TaskRow.request_id.in_(request_ids))
            ).all()
        )
        events = dict(
            conn.execute(
                select(TaskEventRow.task_id, func.count())
                .where(TaskEventRow.task_id.in_(tasks.values()))
                .group_by(TaskEventRow.task_id)
            ).all()
        )
        outbox = dict(
            conn.execute(
                select(TaskOutboxRow.task_id, func.count())
                .where(TaskOutboxRow.task_id.in_(tasks.values()))
                .group_by(TaskOutboxRow.task_id)
            ).all()
        )
    return {r: (t, events.get(t, 0), outbox.get(t, 0)) for r, t in tasks.items()}


def test_submit_many_resolves_each_request_like_a_lone_submit(engine: Engine) -> None:
    store = TaskStore(engine)
    old_same, old_other, new, twice = (str(uuid.uuid4()) for _ in range(4))
    earlier = store.submit_many([_new(old_same), _new(old_other)])
    assert all(isinstance(r, Written) and r.publish is not None for r in earlier)
    # Every one of them, as asserted; the comprehension narrows the type for mypy.
    old = [r for r in earlier if isinstance(r, Written)]

    results = store.submit_many(
        [
            _new(old_same),  # resubmit: the earlier task, nothing to publish
            _new(old_other, "h2"),  # reuse for another request
            _new(new, priority=pb.PRIORITY_HIGH),
            _new(twice),  # given twice in one batch: the second is a resubmit
            _new(twice),
            _new(twice, "h2"),  # ... and a third time, for another request
        ]
    )
    resubmit, reused, fresh, first, second, third = results
    assert isinstance(resubmit, Written)
    assert resubmit.publish is None
    assert resubmit.record == old[0].record
    for refused in (reused, third):
        assert isinstance(refused, AlreadyExists)
        assert refused.reason == "REQUEST_ID_REUSED"
    assert isinstance(fresh, Written)
    assert fresh.publish is not None
    assert fresh.record.priority == pb.PRIORITY_HIGH
    assert fresh.publish.task_id == fresh.record.id
    assert fresh.publish.attempt == 1
    assert isinstance(first, Written)
    assert first.publish is not None
    assert isinstance(second, Written)
    assert second.publish is None
    assert second.record.id == first.record.id

    rows = _rows(engine, [old_same, old_other, new, twice])
    assert rows == {
        old_same: (old[0].record.id, 1, 1),
        old_other: (old[1].record.id, 1, 1),
        new: (fresh.record.id, 1, 1),
        twice: (first.record.id, 1, 1),
    }


def test_concurrent_submit_many_of_one_request_id_makes_one_task(engine: Engine) -> None:
    store = TaskStore(engine)
    request_id = str(uuid.uuid4())
    results: list[Written | AlreadyExists] = []
    lock = threading.Lock()

    def submit(hash_: str) -> None:
        batch = store.submit_many([_new(request_id, hash_)])
        with lock:
            results.extend(batch)

    threads = [threading.Thread(target=submit, args=(f"h{i % 2}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8
    accepted = [r for r in results if isinstance(r, Written)]
    refused = [r for r in results if isinstance(r, AlreadyExists)]
    assert len(accepted) == 4
    assert len(refused) == 4
    assert len({r.record.id for r in accepted}) == 1
    assert sum(r.publish is not None for r in accepted) == 1
    assert _rows(engine, [request_id]) == {request_id: (accepted[0].record.id, 1, 1)}


# --- TaskPublisher --------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A private vhost for this module."""
    with private_vhost() as url:
        yield url


def _item(number: int) -> OutboxItem:
    return OutboxItem(
        id=number,
        task_id=str(uuid.uuid4()),
        attempt=1,
        kind=pb.TASK_KIND_PROBE,
        priority=pb.PRIORITY_NORMAL,
        not_before=datetime.now(UTC),
    )


def _depth(url: str, queue: str) -> int:
    with Connection(url, connect_timeout=5) as connection:
        _name, count, _consumers = connection.default_channel.queue_declare(
            queue=queue, passive=True
        )
    return int(count)


def test_publisher_confirms_a_burst_of_concurrent_publishes(broker_url: str) -> None:
    queue = f"test.publish.{uuid.uuid4().hex[:8]}"
    settings = BrokerSettings(url=broker_url, queue=queue, events_exchange=f"{queue}.events")
    forgotten: list[list[int]] = []
    publisher = TaskPublisher(settings, forget=forgotten.append)
    settled: list[list[bool]] = []
    done = threading.Event()
    jobs = 300
    early: list[int] = []

    def on_settled(number: int, flags: list[bool]) -> None:
        if not any(number in ids for ids in forgotten):
            early.append(number)  # heard back before its outbox row was forgotten
        settled.append(flags)
        if len(settled) == jobs:
            done.set()

    try:
        for number in range(jobs):
            publisher.publish_async([_item(number)], functools.partial(on_settled, number))
        assert done.wait(30), f"only {len(settled)} of {jobs} publishes settled"
        assert all(flags == [True] for flags in settled)
        assert _depth(broker_url, queue) == jobs
        assert not early, f"settled before forgotten: {early[:5]}"
        assert sorted(i for ids in forgotten for i in ids) == list(range(jobs))
        assert len(forgotten) < jobs, "confirmed rows should be forgotten per batch"
        # A lone publish after the burst is confirmed too (blocking form).
        assert publisher.publish(_item(jobs))
    finally:
        publisher.close()
    closed: list[list[bool]] = []
    publisher.publish_async([_item(0)], closed.append)
    assert closed == [[False]], "a closed publisher refuses at once"
    with Connection(broker_url, connect_timeout=5) as connection:
        declare_topology(connection, settings)  # idempotent; then clean up
        connection.default_channel.queue_delete(queue)
        connection.default_channel.queue_delete(f"{queue}.dlq")


def test_publisher_refuses_quickly_when_the_broker_is_unreachable() -> None:
    settings = BrokerSettings(
        url="amqp://guest:guest@127.0.0.1:1//", queue="unreachable", events_exchange="x"
    )
    publisher = TaskPublisher(settings)
    try:
        begin = time.monotonic()
        assert publisher.publish(_item(1)) is False
        # Within the cool-down the broker is not tried again: refused without a wait.
        second = time.monotonic()
        assert publisher.publish(_item(2)) is False
        assert time.monotonic() - second < 0.5
        assert second - begin < 5.0
    finally:
        publisher.close()


# --- end to end -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_stack(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server (no workers) on a fresh PostgreSQL database; submits not rate limited."""
    workdir = tmp_path_factory.mktemp("submit-batching")
    with (
        postgres_database(workdir / "pg") as url,
        stack(
            workdir,
            broker_url,
            url,
            AGENTIC_SUBMIT_RATE_PER_SECOND="100000",
            AGENTIC_SUBMIT_BURST="100000",
        ) as s,
    ):
        s.start_server()
        yield s


async def _submit_all(
    address: str, requests: list[pb.SubmitProbeRequest], in_flight: int
) -> list[pb.Task | grpc.aio.AioRpcError]:
    results: list[pb.Task | grpc.aio.AioRpcError] = [pb.Task()] * len(requests)
    async with authorized_aio_channel(address) as channel:
        stub = tasks_pb2_grpc.TaskServiceStub(channel)
        gate = asyncio.Semaphore(in_flight)

        async def one(index: int) -> None:
            async with gate:
                try:
                    reply = await stub.SubmitProbe(requests[index], timeout=20)
                    results[index] = reply.task
                except grpc.aio.AioRpcError as error:
                    results[index] = error

        await asyncio.gather(*(one(i) for i in range(len(requests))))
    return results


def _request(request_id: str, steps: int = 1) -> pb.SubmitProbeRequest:
    return pb.SubmitProbeRequest(
        request_id=request_id, owner_id="alice", probe=pb.ProbeSpec(steps=steps)
    )


def test_concurrent_submits_are_all_durable_and_confirmed(pg_stack: Stack) -> None:
    count = 400
    requests = [_request(str(uuid.uuid4())) for _ in range(count)]
    results = asyncio.run(_submit_all(pg_stack.servers[0].address, requests, in_flight=32))
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert not errors, f"{len(errors)} submits failed, first: {errors[0]}"
    ids = {r.id for r in results if isinstance(r, pb.Task)}
    assert len(ids) == count
    rows = _rows(pg_stack.db(), [r.request_id for r in requests])
    # Every task committed with its first event; every publish confirmed (the fast path
    # deleted every outbox row before answering).
    assert {task_id for task_id, _, _ in rows.values()} == ids
    assert {(events, outbox) for _, events, outbox in rows.values()} == {(1, 0)}
    assert _depth(pg_stack.env["AGENTIC_BROKER_URL"], pg_stack.env["AGENTIC_TASK_QUEUE"]) == count


def test_concurrent_resubmits_of_one_request_id_return_one_task(pg_stack: Stack) -> None:
    request_id = str(uuid.uuid4())
    same = [_request(request_id) for _ in range(24)]
    other = [_request(request_id, steps=2) for _ in range(8)]
    results = asyncio.run(_submit_all(pg_stack.servers[0].address, same + other, in_flight=32))
    accepted = [r for r in results if isinstance(r, pb.Task)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len({t.id for t in accepted}) == 1
    winner_steps = accepted[0].probe.steps
    assert len(accepted) == (24 if winner_steps == 1 else 8)
    for error in refused:
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        status = rpc_status.from_call(error)
        assert status is not None
        infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
        assert len(infos) == 1
        info = error_details_pb2.ErrorInfo()
        infos[0].Unpack(info)
        assert info.reason == "REQUEST_ID_REUSED"
    rows = _rows(pg_stack.db(), [request_id])
    assert rows == {request_id: (accepted[0].id, 1, 0)}


# --- the pool's ping after idle -------------------------------------------------------


def _terminate(url: str, pid: int) -> None:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_pool_pings_only_connections_idle_past_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with postgres_database(tmp_path / "pg") as url:
        engine = make_engine(url, pool_size=1)
        try:
            backend = text("SELECT pg_backend_pid()")
            with engine.connect() as conn:
                first = conn.scalar(backend)
            _terminate(url, first)
            # Not idle long enough: no ping, the broken connection fails the call (the API
            # maps that to UNAVAILABLE) and the pool replaces it for the next one.
            with pytest.raises(OperationalError), engine.connect() as conn:
                conn.scalar(backend)
            with engine.connect() as conn:
                second = conn.scalar(backend)
            assert second != first
            _terminate(url, second)
            # Idle past the threshold: the checkout pings, finds it dead, opens another.
            monkeypatch.setattr(engine_module, "IDLE_PING_SECONDS", 0.0)
            with engine.connect() as conn:
                third = conn.scalar(backend)
            assert third not in (first, second)
        finally:
            engine.dispose()
