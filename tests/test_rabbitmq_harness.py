"""The private-broker harness (tests/_rabbitmq.py) and ``ensure_broker`` (devtools.broker).

Proves the fault harness does what fault tests will rely on: a confirmed persistent message
survives ``kill -9`` of the broker, a transient queue does not, ``stop`` leaves no process
behind, failures say why, and the machine's shared RabbitMQ node is never disturbed.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu.connection import Connection
from kombu.entity import Queue

from devtools.broker import (
    BrokerError,
    BrokerNotInstalled,
    BrokerRefused,
    BrokerUnreachable,
    NodeConfig,
    RabbitNode,
    _node,
    check_amqp,
    ensure_broker,
    epmd_names,
    live_pids,
    process_alive,
)
from devtools.ports import free_port
from tests._rabbitmq import PrivateRabbit, listener_pid

SHARED_URL = "amqp://guest:guest@127.0.0.1:5672//"
MESSAGES = 300
# Cookies private nodes must never create or rewrite: the invoking user's and the system
# node's (a node sharing either could be reached, or locked out, by our rabbitmqctl).
FOREIGN_COOKIES = (Path.home() / ".erlang.cookie", Path("/var/lib/rabbitmq/.erlang.cookie"))


def _cookie_state() -> dict[Path, float | None]:
    return {path: path.stat().st_mtime if path.exists() else None for path in FOREIGN_COOKIES}


@pytest.fixture(scope="module", autouse=True)
def shared_broker() -> Iterator[int | None]:
    """The pid of the shared broker's VM on 5672 (None without one), checked afterwards.

    Afterwards that VM must still run and serve, and no Erlang cookie but our nodes' own may
    have changed. Module-scoped and autouse, so it is set up first and torn down last: the
    checks run after every private node of this module has been killed and stopped.
    """
    pid = listener_pid(5672)
    cookies = _cookie_state()
    yield pid
    assert _cookie_state() == cookies, "a private node touched a foreign Erlang cookie"
    if pid is not None:
        assert process_alive(pid), "the shared RabbitMQ node died during the harness tests"
        assert listener_pid(5672) == pid, "the shared RabbitMQ node was restarted"
        check_amqp(SHARED_URL)


@pytest.fixture(scope="module")
def rabbit(shared_broker: int | None) -> Iterator[PrivateRabbit]:
    """One private node for the module (a fresh boot costs seconds); tests leave it running."""
    with PrivateRabbit() as node:
        yield node


def _publish_confirmed(url: str, queue: Queue, count: int, *, persistent: bool = True) -> None:
    # confirm_publish: basic_publish returns only once the broker has confirmed the message,
    # which for a persistent message on a durable queue means it is on disk.
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer()
        for n in range(count):
            producer.publish(
                f"m-{n}",
                routing_key=queue.name,
                declare=[queue],
                delivery_mode=2 if persistent else 1,
                retry=False,
            )


def _drain(url: str, queue: Queue, limit: int) -> list[str]:
    """Every message in ``queue`` (at most ``limit``), acknowledged on receipt."""
    bodies: list[str] = []
    with Connection(url) as conn:
        bound = queue.bind(conn.default_channel)
        for _ in range(limit + 1):  # one more than expected, to see an excess
            message = bound.get(no_ack=True)
            if message is None:
                break
            bodies.append(
                message.body.decode() if isinstance(message.body, bytes) else message.body
            )
    return bodies


def _queue_exists(url: str, name: str) -> bool:
    with Connection(url) as conn:
        try:
            conn.default_channel.queue_declare(queue=name, passive=True)
        except conn.channel_errors as exc:  # amqp's NotFound, through kombu's public surface
            if getattr(exc, "reply_code", None) == 404:
                return False
            raise
        return True


@pytest.mark.timeout(90)
def test_kill_9_loses_no_confirmed_persistent_message(
    rabbit: PrivateRabbit, shared_broker: int | None
) -> None:
    durable = Queue(f"harness.durable.{uuid.uuid4().hex[:8]}", durable=True, auto_delete=False)
    transient = Queue(f"harness.transient.{uuid.uuid4().hex[:8]}", durable=False)
    # Control: non-persistent messages in a durable queue live in memory only. Finding them
    # gone proves the node really restarted from disk rather than kept running.
    in_memory = Queue(f"harness.in-memory.{uuid.uuid4().hex[:8]}", durable=True)
    _publish_confirmed(rabbit.url, durable, MESSAGES)
    _publish_confirmed(rabbit.url, transient, 5)
    _publish_confirmed(rabbit.url, in_memory, 5, persistent=False)
    victims = rabbit.processes()
    url_before = rabbit.url
    epmd_before = listener_pid(4369)

    rabbit.kill()

    assert not live_pids(victims), "kill() left processes"
    with pytest.raises(BrokerUnreachable):
        check_amqp(rabbit.url, timeout_seconds=0.5)
    assert listener_pid(4369) == epmd_before, "epmd is shared: kill() must leave it alone"
    assert shared_broker is None or process_alive(shared_broker)

    rabbit.restart()

    assert rabbit.url == url_before
    bodies = _drain(rabbit.url, durable, MESSAGES)
    assert sorted(bodies) == sorted(f"m-{n}" for n in range(MESSAGES)), (
        f"{MESSAGES - len(set(bodies))} confirmed messages lost, "
        f"{len(bodies) - len(set(bodies))} duplicated\n{rabbit.log()}"
    )
    assert not _queue_exists(rabbit.url, transient.name), "a transient queue survived restart"
    # The control's queue definition was written moments before the kill, and RabbitMQ's
    # metadata store may not have synced it yet (seen once in CI): it may be gone too. What
    # must hold is that none of its non-persistent messages came back.
    if _queue_exists(rabbit.url, in_memory.name):
        assert _drain(rabbit.url, in_memory, 5) == [], "non-persistent messages survived kill -9"


def test_wrong_password_is_refused_not_unreachable(rabbit: PrivateRabbit) -> None:
    with pytest.raises(BrokerRefused, match="403"):
        check_amqp(rabbit.url.replace("guest:guest", "guest:wrong"))
    with pytest.raises(BrokerRefused, match="vhost 'nope'"):
        check_amqp(rabbit.url.rstrip("/") + "/nope")


def test_a_clashing_node_fails_fast_with_its_log(rabbit: PrivateRabbit, tmp_path: Path) -> None:
    twin = RabbitNode(
        NodeConfig(
            base_dir=tmp_path / "twin",
            node_name=rabbit.node_name,  # epmd already has this name: the VM exits at once
            amqp_port=free_port(),
            dist_port=free_port(),
        )
    )
    begin = time.monotonic()
    with pytest.raises(BrokerError, match="exited with") as failure:
        twin.start(timeout_seconds=30)
    assert time.monotonic() - begin < 20, "an exited node must fail fast, not time out"
    assert "stdout.log" in str(failure.value), "the failure must quote the node's output"
    assert not twin.running
    check_amqp(rabbit.url)  # the original is unharmed


def test_a_taken_port_is_refused_before_launch(rabbit: PrivateRabbit, tmp_path: Path) -> None:
    config = NodeConfig(tmp_path / "n", "agentic-taken@localhost", rabbit.port, free_port())
    with pytest.raises(BrokerError, match=f"AMQP port {rabbit.port} .* is taken"):
        RabbitNode(config).start()


def test_a_non_amqp_listener_is_not_mistaken_for_a_broker(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer_http() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(8)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer_http, daemon=True)
        thread.start()
        url = f"amqp://guest:guest@127.0.0.1:{port}//"
        with pytest.raises(BrokerUnreachable):
            check_amqp(url, timeout_seconds=2)
        thread.join(5)
        with pytest.raises(BrokerError, match="not an AMQP broker"):
            ensure_broker(url, tmp_path, probe_timeout_seconds=0.5)


def test_stop_leaves_no_process_and_no_epmd_name(shared_broker: int | None) -> None:
    with PrivateRabbit() as rabbit:
        processes = rabbit.processes()
        vm = rabbit.pid
        assert vm in processes
        assert len(processes) >= 3, f"expected shell, VM and erl_child_setup: {processes}"
        rabbit.stop()
        assert not live_pids(processes), "stop() left processes"
        assert rabbit.node_name.split("@")[0] not in epmd_names()
        assert listener_pid(rabbit.port) is None


@pytest.mark.timeout(90)
def test_ensure_broker_starts_a_private_node_that_keeps_its_data(
    tmp_path: Path, shared_broker: int | None
) -> None:
    # Own user and vhost: the private node must be seeded from the URL, not with guest.
    url = f"amqp://agentic:s3cret@127.0.0.1:{free_port()}/tasks"
    queue = Queue("harness.make-run", durable=True, auto_delete=False)

    first_url, stop = ensure_broker(url, tmp_path, consumer_timeout_ms=7_200_000)
    assert stop is not None, "nothing answered at the URL: a private node must be started"
    try:
        assert first_url == url
        _publish_confirmed(first_url, queue, 3)
    finally:
        stop()
    with pytest.raises(BrokerUnreachable):
        check_amqp(url, timeout_seconds=0.5)

    again_url, stop_again = ensure_broker(url, tmp_path)  # `make run` a second time
    assert stop_again is not None
    try:
        assert again_url == url
        assert _drain(again_url, queue, 3) == ["m-0", "m-1", "m-2"]
        assert ensure_broker(url, tmp_path) == (url, None), "a live broker is used as it is"
    finally:
        stop_again()


def test_ensure_broker_explains_a_missing_installation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_node, "SYSTEM_SCRIPTS", ())
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerNotInstalled, match="apt-get install rabbitmq-server"):
        ensure_broker(f"amqp://guest:guest@127.0.0.1:{free_port()}//", tmp_path)


def test_ensure_broker_reuses_the_shared_node_untouched(shared_broker: int | None) -> None:
    if shared_broker is None:
        pytest.skip("no shared RabbitMQ node on 127.0.0.1:5672 on this machine")
    assert ensure_broker(SHARED_URL, Path("/nonexistent")) == (SHARED_URL, None)
    assert listener_pid(5672) == shared_broker
