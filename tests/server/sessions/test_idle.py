"""Idle sessions through the cache sidecar: memcached <- sidecar <- two API servers.

The idle timeout is 2 s (the sidecar's sessions TTL and the servers' setting), activity is
written at most every 0.5 s. A session left alone past the timeout is refused on both
servers; one that keeps calling stays valid for more than three timeouts, its activity
written at most once per interval (counted at the sidecar), and a server that never saw
it learns from the sidecar that it is active.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc

from devtools.memcached import Memcached
from devtools.ports import free_port
from server.auth import Role
from tests._identity import dev_keys
from tests._processes import Service, start_sidecar
from tests._scrape import metric, metrics_text
from tests.server.sessions._stack import api, call, policy_with_session_ttl

IDLE_SECONDS = 2
TOUCH_SECONDS = 0.5
SESSION_ENV = {
    "AGENTIC_SESSION_IDLE_SECONDS": str(IDLE_SECONDS),
    "AGENTIC_SESSION_TOUCH_INTERVAL_SECONDS": str(TOUCH_SECONDS),
    "AGENTIC_SESSION_MAX_AGE_SECONDS": "600",
}


@dataclass
class Stack:
    """Two API servers over one sidecar (one memcached) and one database."""

    a: grpc.Channel
    b: grpc.Channel
    sidecar: Service
    server_a: Service

    def session_fills(self) -> int:
        """Records the sidecar stored in the sessions namespace so far."""
        with grpc.insecure_channel(self.sidecar.address) as channel:
            stats = cache_pb2_grpc.CacheServiceStub(channel).Stats(
                cache_pb2.StatsRequest(), timeout=5
            )
        found = [ns.fills_stored for ns in stats.namespaces if ns.namespace == "sessions"]
        assert found, "the sidecar reports no sessions namespace"
        return int(found[0])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("idle")
    memcached = Memcached(free_port(), tmp / "memcached.log")
    memcached.start()
    started: list[Service] = []
    try:
        policy = policy_with_session_ttl(tmp, IDLE_SECONDS)
        sidecar = start_sidecar(tmp / "sidecar", [memcached], policy)
        started.append(sidecar)
        database = tmp / "shared.db"
        server_a = api(tmp / "a", database, sidecar.address, **SESSION_ENV)
        started.append(server_a)
        server_b = api(tmp / "b", database, sidecar.address, **SESSION_ENV)
        started.append(server_b)
        with (
            grpc.insecure_channel(server_a.address) as a,
            grpc.insecure_channel(server_b.address) as b,
        ):
            yield Stack(a, b, sidecar, server_a)
    finally:
        for service in reversed(started):
            service.stop()
        memcached.stop()


def new_session(name: str) -> str:
    """A token of a new session (a fresh sid, issued now) of a new user."""
    return dev_keys().mint(f"{name}-{uuid.uuid4().hex[:6]}", [Role.PROJECT_MANAGER])


def test_a_session_idle_past_the_timeout_is_refused_on_every_server(stack: Stack) -> None:
    token = new_session("idle")
    assert call(stack.a, token) == "OK"  # the first call of a new session
    # The thing under test is the passing of time without calls: nothing to wait on.
    time.sleep(IDLE_SECONDS + 0.7)
    assert call(stack.a, token) == "SESSION_EXPIRED"
    assert call(stack.b, token) == "SESSION_EXPIRED"
    assert call(stack.a, new_session("fresh")) == "OK"  # another session is not affected


def test_an_active_session_stays_valid_and_its_writes_are_rate_limited(stack: Stack) -> None:
    token = new_session("active")
    before = stack.session_fills()
    started = time.monotonic()
    calls = 0
    # Calls every 0.1 s (5x the touch rate) for 3.5 idle timeouts, on server A only.
    while (elapsed := time.monotonic() - started) < 3.5 * IDLE_SECONDS and calls < 200:
        assert call(stack.a, token) == "OK", f"refused after {elapsed:.1f}s of activity"
        calls += 1
        time.sleep(0.1)  # the pace of the client under test
    duration = time.monotonic() - started
    writes = stack.session_fills() - before
    most = duration / TOUCH_SECONDS + 3  # + the first write, which also fills the 2nd key
    assert 3 <= writes <= most, f"{writes} activity writes for {calls} calls in {duration:.1f}s"
    assert calls > 3 * writes
    # Server B never saw this session, and its token is older than the timeout: only the
    # record server A keeps writing to the sidecar tells B that it is active.
    assert call(stack.b, token) == "OK"
    text = metrics_text(int(stack.server_a.ready["metrics_port"]))
    assert metric(text, "agentic_sessions_active") >= 1
