"""Revocation on every replica within a second, with Memcached down: two API servers over
one database (and one sidecar whose memcached is killed first), then a third server
started afterwards, which loads the revocations at start."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from agentic.admin.v1 import admin_pb2, admin_pb2_grpc
from agentic.sessions.v1 import sessions_pb2, sessions_pb2_grpc

from devtools.memcached import Memcached
from devtools.ports import free_port
from server.auth import Role
from tests._identity import authorized_channel, bearer, dev_keys, service_token
from tests._processes import Service, start_sidecar
from tests._scrape import metric, metrics_text
from tests._support import wait_for
from tests.server.sessions._stack import SHIPPED_POLICY, TIMEOUT, api, call

PROPAGATION_SECONDS = 1.0


def refused_within(check: Callable[[], str], seconds: float, what: str) -> float:
    """Wait until ``check()`` says SESSION_REVOKED; the seconds it took (fails past
    ``seconds``)."""
    started = time.monotonic()
    wait_for(lambda: check() == "SESSION_REVOKED", timeout=seconds, message=what)
    return time.monotonic() - started


def test_a_revoked_session_is_refused_on_every_replica_within_a_second_without_memcached(
    tmp_path: Path,
) -> None:
    memcached = Memcached(free_port(), tmp_path / "memcached.log")
    memcached.start()
    started: list[Service] = []
    try:
        sidecar = start_sidecar(tmp_path / "sidecar", [memcached], SHIPPED_POLICY)
        started.append(sidecar)
        database = tmp_path / "shared.db"
        server_a = api(tmp_path / "a", database, sidecar.address)
        started.append(server_a)
        server_b = api(tmp_path / "b", database, sidecar.address)
        started.append(server_b)
        user = f"alice-{uuid.uuid4().hex[:6]}"
        other = f"bob-{uuid.uuid4().hex[:6]}"
        alice = dev_keys().mint(user, [Role.TECHNICAL_LEAD])
        alice_elsewhere = dev_keys().mint(user, [Role.TECHNICAL_LEAD])  # a second sign-in
        bob = dev_keys().mint(other, [Role.TECHNICAL_LEAD])
        with (
            grpc.insecure_channel(server_a.address) as a,
            grpc.insecure_channel(server_b.address) as b,
            authorized_channel(server_a.address) as admin_channel,
        ):
            for token in (alice, alice_elsewhere, bob):
                assert call(a, token) == call(b, token) == "OK"
            memcached.stop()  # from here on the cache cannot help anyone
            assert call(b, alice) == "OK"

            # Alice logs out on A; B refuses that session within a second.
            ended = sessions_pb2_grpc.SessionServiceStub(a).RevokeSession(
                sessions_pb2.RevokeSessionRequest(),
                metadata=(("authorization", bearer(alice)),),
                timeout=TIMEOUT,
            )
            took = refused_within(
                lambda: call(b, alice), PROPAGATION_SECONDS, "server B to refuse the logout"
            )
            assert ended.session_id
            assert call(a, alice) == "SESSION_REVOKED"  # at once where it was revoked
            # Her other session and other users are not affected: a user ends only its own.
            assert call(b, alice_elsewhere) == call(b, bob) == "OK"

            # An Administrator ends every session of Bob on A; B follows within a second.
            admin_sessions = sessions_pb2_grpc.SessionServiceStub(admin_channel)
            admin_sessions.RevokeSessions(
                sessions_pb2.RevokeSessionsRequest(subject=other), timeout=TIMEOUT
            )
            took_all = refused_within(
                lambda: call(b, bob), PROPAGATION_SECONDS, "server B to refuse Bob's sessions"
            )
            assert call(b, alice_elsewhere) == "OK"
            # A token issued after the cut-off (Bob signs in again) is admitted.
            again = dev_keys().mint(other, [Role.TECHNICAL_LEAD], now=time.time() + 2)
            assert call(b, again) == "OK"

            audit = admin_pb2_grpc.AdminServiceStub(admin_channel).ListAuditEvents(
                admin_pb2.ListAuditEventsRequest(page_size=50), timeout=TIMEOUT
            )
            actions = {(e.subject, e.action, e.outcome) for e in audit.audit_events}
            prefix = "/agentic.sessions.v1.SessionService/"
            assert (user, prefix + "RevokeSession", "OK") in actions
            assert ("test-admin", prefix + "RevokeSessions", "OK") in actions

            text = metrics_text(int(server_b.ready["metrics_port"]))
            assert metric(text, "agentic_session_refusals_total", reason="revoked") >= 2

        # A server started now loads the revocations before it serves.
        server_c = api(tmp_path / "c", database, sidecar.address)
        started.append(server_c)
        with grpc.insecure_channel(server_c.address) as c:
            assert call(c, alice) == call(c, bob) == "SESSION_REVOKED"
            assert call(c, alice_elsewhere) == "OK"
        print(f"propagation: logout {took:.3f}s, subject {took_all:.3f}s")
    finally:
        for service in reversed(started):
            service.stop()
        memcached.stop()


def test_session_less_tokens_are_admitted_only_for_the_allow_list(tmp_path: Path) -> None:
    server = api(
        tmp_path / "api", tmp_path / "db.sqlite", AGENTIC_SESSIONLESS_ROLES="support_engineer"
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            mallory = dev_keys().mint("mallory", [Role.PROJECT_MANAGER], session=False)
            assert call(channel, mallory) == "SESSION_REQUIRED"
            # The default allow-list names the beat's subject; the role list, here, support.
            assert call(channel, service_token()) == "OK"
            support = dev_keys().mint("oncall", [Role.SUPPORT_ENGINEER], session=False)
            assert call(channel, support) == "OK"
            # A session-less token has no session to end.
            stub = sessions_pb2_grpc.SessionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.RevokeSession(
                    sessions_pb2.RevokeSessionRequest(),
                    metadata=(("authorization", bearer(service_token())),),
                    timeout=TIMEOUT,
                )
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            text = metrics_text(int(server.ready["metrics_port"]))
            assert metric(text, "agentic_session_refusals_total", reason="required") == 1
    finally:
        server.stop()
