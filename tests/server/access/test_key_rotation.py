"""Key rotation on a running server: old and new keys both work during the rotation, and a
key removed from the JWKS stops being trusted within AGENTIC_AUTH_JWKS_MAX_AGE_SECONDS even
though no token ever names an unknown kid (nothing else would make the server re-read)."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
from agentic.projects.v1 import projects_pb2 as pb
from agentic.projects.v1 import projects_pb2_grpc

from devtools.devkeys import DevKeys
from server.auth import Role
from tests._identity import token_channel
from tests._processes import start_service
from tests._support import wait_for

TIMEOUT = 10


def _code(address: str, token: str) -> grpc.StatusCode:
    with token_channel(address, token) as channel:
        stub = projects_pb2_grpc.ProjectServiceStub(channel)
        try:
            stub.ListProjects(pb.ListProjectsRequest(page_size=1), timeout=TIMEOUT)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_a_retired_key_stops_working_without_an_unknown_kid(tmp_path: Path) -> None:
    keys = DevKeys(tmp_path / "keys")
    old_kid = keys.ensure()
    old = keys.mint(f"old-{uuid.uuid4().hex[:6]}", [Role.SUPPORT_ENGINEER])
    keys.rotate()  # the new key is published beside the old one
    new = keys.mint(f"new-{uuid.uuid4().hex[:6]}", [Role.SUPPORT_ENGINEER])
    service = start_service(
        "server",
        {
            "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
            "AGENTIC_METRICS_ADDRESS": "",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
            "AGENTIC_CACHE_ADDRESS": "",
            "AGENTIC_AUTH_JWKS": str(keys.jwks_path),
            "AGENTIC_AUTH_JWKS_REFRESH_SECONDS": "0.2",
            "AGENTIC_AUTH_JWKS_MAX_AGE_SECONDS": "0.5",
            "AGENTIC_AUTH_TOKEN_CACHE_SECONDS": "0",
            "AGENTIC_SHUTDOWN_GRACE_SECONDS": "1",
        },
        tmp_path / "api",
    )
    try:
        assert _code(service.address, old) == grpc.StatusCode.OK, "during rotation: old key"
        assert _code(service.address, new) == grpc.StatusCode.OK, "during rotation: new key"
        keys.retire(old_kid)
        wait_for(
            lambda: _code(service.address, old) == grpc.StatusCode.UNAUTHENTICATED,
            timeout=10,
            message="a token of the retired key to be refused",
        )
        assert _code(service.address, new) == grpc.StatusCode.OK
    finally:
        assert service.stop() == 0, service.log()


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_max_age_stops_the_start(tmp_path: Path, value: str) -> None:
    with pytest.raises(AssertionError, match="AGENTIC_AUTH_JWKS_MAX_AGE_SECONDS"):
        start_service(
            "server",
            {
                "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
                "AGENTIC_METRICS_ADDRESS": "",
                "DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
                "AGENTIC_AUTH_JWKS_MAX_AGE_SECONDS": value,
            },
            tmp_path / "api",
            timeout=15,
        )
