"""Transport security of the API server (issue #5): TLS towards clients, optional client
certificates, and mTLS towards the cache sidecar, with real processes on loopback.

Certificates come from a development CA made per module (``devtools.devca.ensure_dev_ca``);
its server and sidecar certificates name 127.0.0.1, the address every client here dials,
so each handshake checks the name as well as the chain. TLS replaces none of the other
checks: every call still carries a bearer token.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc
from agentic.projects.v1 import projects_pb2 as pb
from agentic.projects.v1 import projects_pb2_grpc

from core.tls import channel_credentials
from devtools.devca import DevCa, ensure_dev_ca
from devtools.memcached import Memcached
from devtools.ports import free_port
from tests._identity import metadata
from tests._processes import Service, run_module, start_service, start_sidecar
from tests._scrape import metric, metrics_text
from tests._support import REPO

POLICY = REPO / "cache_sidecar" / "namespaces.toml"  # the namespaces the API server uses
# Every RPC has a deadline: a handshake that hangs instead of failing shows up as
# DEADLINE_EXCEEDED, not as a stuck test.
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevCa:
    """The development CA every process of this module trusts."""
    return ensure_dev_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> DevCa:
    """Another development CA: valid certificates nobody here trusts."""
    return ensure_dev_ca(tmp_path_factory.mktemp("foreign-tls"))


def _api_env(database: Path, pki: DevCa, **extra: str) -> dict[str, str]:
    return {
        "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
        "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
        "DATABASE_URL": f"sqlite:///{database}",
        "AGENTIC_CACHE_ADDRESS": "",
        "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
        "AGENTIC_TLS_CERT_FILE": str(pki.server_cert),
        "AGENTIC_TLS_KEY_FILE": str(pki.server_key),
        **extra,
    }


def _stop(service: Service) -> None:
    code = service.stop()
    assert code == 0, f"exited with {code} on SIGTERM:\n{service.log()}"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: DevCa) -> Iterator[Service]:
    """An API server serving TLS, asking no client certificate."""
    workdir = tmp_path_factory.mktemp("tls-api")
    service = start_service("server", _api_env(workdir / "api.db", pki), workdir)
    try:
        yield service
    finally:
        _stop(service)


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory: pytest.TempPathFactory, pki: DevCa) -> Iterator[Service]:
    """An API server requiring client certificates issued by ``pki``."""
    workdir = tmp_path_factory.mktemp("mtls-api")
    env = _api_env(workdir / "api.db", pki, AGENTIC_TLS_CLIENT_CA_FILE=str(pki.ca_cert))
    service = start_service("server", env, workdir)
    try:
        yield service
    finally:
        _stop(service)


def _projects(channel: grpc.Channel) -> projects_pb2_grpc.ProjectServiceStub:
    return projects_pb2_grpc.ProjectServiceStub(channel)


def _create(channel: grpc.Channel, owner: str = "alice") -> pb.Project:
    request = pb.CreateProjectRequest(
        project=pb.Project(name=f"p-{uuid.uuid4().hex[:8]}", owner_id=owner)
    )
    project: pb.Project = (
        _projects(channel).CreateProject(request, metadata=metadata(), timeout=TIMEOUT).project
    )
    return project


def _get(channel: grpc.Channel, project_id: str) -> pb.Project:
    request = pb.GetProjectRequest(id=project_id)
    project: pb.Project = (
        _projects(channel).GetProject(request, metadata=metadata(), timeout=TIMEOUT).project
    )
    return project


def _owned_by(channel: grpc.Channel, owner: str) -> list[str]:
    request = pb.ListProjectsRequest(owner_id=owner)
    reply = _projects(channel).ListProjects(request, metadata=metadata(), timeout=TIMEOUT)
    return [project.id for project in reply.projects]


def _assert_refused(channel: grpc.Channel, trusted: grpc.Channel) -> None:
    """A CreateProject on ``channel`` fails UNAVAILABLE and never reaches the servicer
    (checked through ``trusted``, a channel the server accepts)."""
    owner = f"refused-{uuid.uuid4().hex[:8]}"
    with pytest.raises(grpc.RpcError) as refused:
        _create(channel, owner)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value
    assert _owned_by(trusted, owner) == [], "a refused client's CreateProject ran"


def _healthcheck(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_module("server.healthcheck", address, *args, timeout=30)


# --- TLS towards API clients ---------------------------------------------------------------


def test_a_client_trusting_the_ca_creates_and_reads_projects(
    tls_server: Service, pki: DevCa
) -> None:
    with grpc.secure_channel(tls_server.address, channel_credentials(pki.ca_cert)) as channel:
        project = _create(channel)
        assert _get(channel, project.id) == project


def test_tls_does_not_replace_the_token(tls_server: Service, pki: DevCa) -> None:
    credentials = channel_credentials(pki.ca_cert)
    with (
        grpc.secure_channel(tls_server.address, credentials) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _projects(channel).GetProject(pb.GetProjectRequest(id="x"), timeout=TIMEOUT)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED, refused.value


def test_a_plaintext_client_is_refused(tls_server: Service, pki: DevCa) -> None:
    with (
        grpc.insecure_channel(tls_server.address) as plaintext,
        grpc.secure_channel(tls_server.address, channel_credentials(pki.ca_cert)) as trusted,
    ):
        _assert_refused(plaintext, trusted)


def test_a_client_trusting_another_ca_is_refused(
    tls_server: Service, pki: DevCa, foreign_ca: DevCa
) -> None:
    # Server authentication: the server's certificate does not chain to what it trusts.
    with (
        grpc.secure_channel(tls_server.address, channel_credentials(foreign_ca.ca_cert)) as foreign,
        grpc.secure_channel(tls_server.address, channel_credentials(pki.ca_cert)) as trusted,
    ):
        _assert_refused(foreign, trusted)


def test_healthcheck_command_over_tls(tls_server: Service, pki: DevCa) -> None:
    over_tls = _healthcheck(tls_server.address, "--ca", str(pki.ca_cert))
    assert over_tls.returncode == 0, over_tls.stderr
    plaintext = _healthcheck(tls_server.address)
    assert plaintext.returncode == 1, plaintext.stderr


# --- client certificates required (AGENTIC_TLS_CLIENT_CA_FILE) -----------------------------


def _with_client_cert(ca: DevCa, pki: DevCa) -> grpc.ChannelCredentials:
    """Trusting ``pki`` for the server, presenting ``ca``'s client certificate."""
    return channel_credentials(pki.ca_cert, ca.client_cert, ca.client_key)


def test_a_client_with_the_dev_client_certificate_is_served(
    mtls_server: Service, pki: DevCa
) -> None:
    with grpc.secure_channel(mtls_server.address, _with_client_cert(pki, pki)) as channel:
        project = _create(channel)
        assert _get(channel, project.id) == project


@pytest.mark.parametrize("identity", ["none", "foreign"])
def test_a_client_without_a_trusted_certificate_is_refused(
    mtls_server: Service, pki: DevCa, foreign_ca: DevCa, identity: str
) -> None:
    credentials = (
        channel_credentials(pki.ca_cert)
        if identity == "none"
        else _with_client_cert(foreign_ca, pki)
    )
    with (
        grpc.secure_channel(mtls_server.address, credentials) as refused,
        grpc.secure_channel(mtls_server.address, _with_client_cert(pki, pki)) as trusted,
    ):
        _assert_refused(refused, trusted)


def test_healthcheck_command_over_mtls(mtls_server: Service, pki: DevCa) -> None:
    ca = ("--ca", str(pki.ca_cert))
    identity = ("--cert", str(pki.client_cert), "--key", str(pki.client_key))
    with_cert = _healthcheck(mtls_server.address, *ca, *identity)
    assert with_cert.returncode == 0, with_cert.stderr
    without_cert = _healthcheck(mtls_server.address, *ca)
    assert without_cert.returncode == 1, without_cert.stderr


# --- the whole chain: client -TLS-> API server -mTLS-> sidecar -> memcached ----------------


def _cached_api_env(
    database: Path, pki: DevCa, sidecar: Service, *, client_certificate: bool
) -> dict[str, str]:
    """An API server on ``database`` reading through ``sidecar`` over TLS that trusts
    ``pki``, presenting its client certificate or not."""
    identity = (
        {
            "AGENTIC_CACHE_CLIENT_CERT_FILE": str(pki.client_cert),
            "AGENTIC_CACHE_CLIENT_KEY_FILE": str(pki.client_key),
        }
        if client_certificate
        else {}
    )
    return _api_env(
        database,
        pki,
        AGENTIC_CACHE_ADDRESS=sidecar.address,
        AGENTIC_CACHE_SERVER_CA_FILE=str(pki.ca_cert),
        AGENTIC_CACHE_TIMEOUT_SECONDS="0.5",
        AGENTIC_CACHE_INVALIDATE_TIMEOUT_SECONDS="0.5",
        **identity,
    )


@dataclass
class Chain:
    """memcached <- sidecar requiring client certificates <- API server presenting one."""

    tmp: Path
    pki: DevCa
    database: Path
    sidecar: Service
    server: Service

    def sidecar_gets(self) -> int:
        """Gets the sidecar has answered so far (asked over mTLS, with the dev identity)."""
        credentials = _with_client_cert(self.pki, self.pki)
        with grpc.secure_channel(self.sidecar.address, credentials) as channel:
            stats = cache_pb2_grpc.CacheServiceStub(channel).Stats(
                cache_pb2.StatsRequest(), timeout=TIMEOUT
            )
        return sum(ns.hits + ns.misses + ns.negative_hits for ns in stats.namespaces)


def _scrape(service: Service) -> str:
    port = service.ready["metrics_port"]
    return metrics_text(port)


def _origin_loads(service: Service) -> float:
    return metric(_scrape(service), "agentic_origin_loads_total", resource="project")


def _gauge(service: Service, name: str) -> float:
    """An unlabelled sample (``metric`` reads labelled ones only)."""
    for line in _scrape(service).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exported")


@pytest.fixture
def chain(tmp_path: Path, pki: DevCa) -> Iterator[Chain]:
    database = tmp_path / "api.db"
    memcached = Memcached(free_port(), tmp_path / "memcached.log")
    memcached.start()
    try:
        sidecar = start_sidecar(
            tmp_path / "sidecar",
            [memcached],
            POLICY,
            {
                # TCP: the network hop mTLS is for (the default is a private Unix socket).
                "AGENTIC_CACHE_LISTEN_ADDRESS": "127.0.0.1:0",
                "AGENTIC_CACHE_TLS_CERT_FILE": str(pki.sidecar_cert),
                "AGENTIC_CACHE_TLS_KEY_FILE": str(pki.sidecar_key),
                "AGENTIC_CACHE_TLS_CLIENT_CA_FILE": str(pki.ca_cert),
            },
        )
        try:
            env = _cached_api_env(database, pki, sidecar, client_certificate=True)
            server = start_service("server", env, tmp_path / "api")
            try:
                yield Chain(tmp_path, pki, database, sidecar, server)
            finally:
                _stop(server)
        finally:
            _stop(sidecar)
    finally:
        memcached.stop()


def test_reads_are_served_from_the_cache_over_mtls(chain: Chain) -> None:
    with grpc.secure_channel(chain.server.address, channel_credentials(chain.pki.ca_cert)) as ch:
        project = _create(ch)
        # The create's invalidation went through: the server reads through the cache.
        assert _gauge(chain.server, "agentic_cache_pending_invalidations") == 0
        loads, gets = _origin_loads(chain.server), chain.sidecar_gets()
        assert _get(ch, project.id) == project  # a miss: loaded once, and filled
        assert _origin_loads(chain.server) == loads + 1
        for _ in range(5):
            assert _get(ch, project.id) == project
        assert _origin_loads(chain.server) == loads + 1, "a repeated read missed the cache"
        assert chain.sidecar_gets() == gets + 6


def test_a_server_without_the_client_certificate_reads_from_the_database(chain: Chain) -> None:
    trusted = channel_credentials(chain.pki.ca_cert)
    with grpc.secure_channel(chain.server.address, trusted) as ch:
        project = _create(ch)
        assert _get(ch, project.id) == project  # now cached
    # Same database and sidecar, but no identity the sidecar accepts: every cache call
    # fails its handshake, and reads must fall back to the database without an error.
    env = _cached_api_env(chain.database, chain.pki, chain.sidecar, client_certificate=False)
    refused = start_service("server", env, chain.tmp / "api-no-cert")
    try:
        gets = chain.sidecar_gets()
        with grpc.secure_channel(refused.address, trusted) as ch:
            loads = _origin_loads(refused)
            for _ in range(3):
                assert _get(ch, project.id) == project
            assert _origin_loads(refused) == loads + 3, "a read was not served by the database"
        assert chain.sidecar_gets() == gets, "the sidecar answered a client without a certificate"
    finally:
        _stop(refused)
