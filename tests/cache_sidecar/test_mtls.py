"""Transport security: the sidecar over mTLS, the development CA, credentials and config.

One sidecar process requiring client certificates from a fresh development CA serves
the mTLS tests of this module; clients that cannot prove an identity from that CA must
fail the handshake, so none of their RPCs ever reaches the sidecar's counters.
"""

from __future__ import annotations

import os
import re
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cache_sidecar import SERVICE_NAME, Config, ConfigError
from core.cache import CacheClient, CacheUnavailable, Outcome
from core.tls import TlsConfigError, channel_credentials, server_credentials
from devtools.devca import DevCa, ensure_dev_ca
from devtools.devca.__main__ import main as devca_main
from devtools.memcached import Memcached
from devtools.ports import free_port
from tests._processes import SIDECAR_ENV, run_module, start_sidecar
from tests.cache_sidecar._support import TEST_POLICY, MemcachedFactory, SidecarFactory, run

# Every RPC here has a deadline: a handshake that hangs instead of failing shows up as
# DEADLINE_EXCEEDED, not as a stuck test.
_RPC_TIMEOUT_SECONDS = 5.0


@dataclass
class MtlsSidecar:
    """A sidecar requiring client certificates, and the CA that issued them."""

    address: str
    ca: DevCa


def _sidecar_tls_env(ca: DevCa, *, mutual: bool = True) -> dict[str, str]:
    # TCP (the network hop mTLS is for). Without client certificates TCP is accepted only
    # in the named insecure mode, on loopback.
    env = {
        "AGENTIC_CACHE_LISTEN_ADDRESS": "127.0.0.1:0",
        "AGENTIC_CACHE_TLS_CERT_FILE": str(ca.sidecar_cert),
        "AGENTIC_CACHE_TLS_KEY_FILE": str(ca.sidecar_key),
    }
    if mutual:
        env["AGENTIC_CACHE_TLS_CLIENT_CA_FILE"] = str(ca.ca_cert)
    else:
        env["AGENTIC_CACHE_INSECURE_LOOPBACK_TCP"] = "true"
    return env


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MtlsSidecar]:
    workdir = tmp_path_factory.mktemp("mtls")
    ca = ensure_dev_ca(workdir / "tls")
    policy = workdir / "policy.toml"
    policy.write_text(TEST_POLICY)
    node = Memcached(free_port(), workdir / "memcached.log")
    node.start()
    try:
        service = start_sidecar(workdir, [node], policy, _sidecar_tls_env(ca))
        try:
            yield MtlsSidecar(service.address, ca)
        finally:
            code = service.stop()
            assert code == 0, service.log()
    finally:
        node.stop()


@pytest.fixture(scope="module")
def foreign_ca(tmp_path_factory: pytest.TempPathFactory) -> DevCa:
    """Another development CA: valid certificates the sidecar must not trust."""
    return ensure_dev_ca(tmp_path_factory.mktemp("foreign-ca"))


def _client_credentials(ca: DevCa) -> grpc.ChannelCredentials:
    return channel_credentials(ca.ca_cert, ca.client_cert, ca.client_key)


async def _gets_handled(address: str, ca: DevCa) -> int:
    """Gets the sidecar has answered so far, in all namespaces (asked over mTLS)."""
    async with CacheClient.connect(address, credentials=_client_credentials(ca)) as cache:
        stats = await cache.stats()
    return sum(ns.hits + ns.misses + ns.negative_hits for ns in stats.namespaces)


async def _assert_get_refused(address: str, ca: DevCa, channel: grpc.aio.Channel) -> None:
    """A Get on ``channel`` fails UNAVAILABLE and the sidecar's counters never move."""
    before = await _gets_handled(address, ca)
    try:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        request = cache_pb2.GetRequest(namespace="projects", key=uuid.uuid4().hex.encode())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Get(request, timeout=_RPC_TIMEOUT_SECONDS)
    finally:
        await channel.close()
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value
    assert await _gets_handled(address, ca) == before, "a refused client's Get was handled"


# --- the sidecar over mTLS ---------------------------------------------------------------


def test_client_with_the_dev_certificate_is_served_through_cache_client(
    mtls: MtlsSidecar,
) -> None:
    async def scenario() -> None:
        key = uuid.uuid4().hex.encode()
        credentials = _client_credentials(mtls.ca)
        async with CacheClient.connect(mtls.address, credentials=credentials) as cache:
            read = await cache.get("projects", key)
            assert read.outcome is Outcome.LOAD
            stats = await cache.stats()
        assert {ns.namespace for ns in stats.namespaces} >= {"projects", "small"}

    run(scenario())


def test_client_with_the_dev_certificate_is_served_through_a_raw_stub(
    mtls: MtlsSidecar,
) -> None:
    async def scenario() -> None:
        channel = grpc.aio.secure_channel(mtls.address, _client_credentials(mtls.ca))
        async with channel:
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            request = cache_pb2.GetRequest(namespace="projects", key=uuid.uuid4().hex.encode())
            reply = await stub.Get(request, timeout=_RPC_TIMEOUT_SECONDS)
            assert reply.outcome == cache_pb2.OUTCOME_LOAD
            assert reply.lease_token

    run(scenario())


def test_the_sidecar_certificate_name_is_checked(mtls: MtlsSidecar) -> None:
    async def scenario() -> None:
        credentials = _client_credentials(mtls.ca)
        # The dev certificate names localhost too, so that override passes...
        async with CacheClient.connect(
            mtls.address, credentials=credentials, server_name="localhost"
        ) as cache:
            assert (await cache.stats()).namespaces
        # ...and a name it does not carry fails the handshake like a foreign CA would.
        async with CacheClient.connect(
            mtls.address, credentials=credentials, server_name="cache.example"
        ) as cache:
            with pytest.raises(CacheUnavailable) as refused:
                await cache.stats()
            assert refused.value.code is grpc.StatusCode.UNAVAILABLE

    run(scenario())


def test_health_checking_works_over_mtls(mtls: MtlsSidecar) -> None:
    async def scenario() -> None:
        channel = grpc.aio.secure_channel(mtls.address, _client_credentials(mtls.ca))
        async with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE_NAME):
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=_RPC_TIMEOUT_SECONDS
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, service

    run(scenario())


def test_client_without_a_certificate_is_refused(mtls: MtlsSidecar) -> None:
    async def scenario() -> None:
        channel = grpc.aio.secure_channel(mtls.address, channel_credentials(mtls.ca.ca_cert))
        await _assert_get_refused(mtls.address, mtls.ca, channel)

    run(scenario())


def test_cache_client_without_a_certificate_reports_the_sidecar_unavailable(
    mtls: MtlsSidecar,
) -> None:
    async def scenario() -> None:
        credentials = channel_credentials(mtls.ca.ca_cert)
        async with CacheClient.connect(mtls.address, credentials=credentials) as cache:
            with pytest.raises(CacheUnavailable) as refused:
                await cache.stats()
            assert refused.value.code is grpc.StatusCode.UNAVAILABLE
            # The read path degrades to the origin, as with any unreachable sidecar.
            loaded = await cache.read_through("projects", b"k", _origin)
            assert loaded == b"from origin"

    run(scenario())


async def _origin() -> bytes:
    return b"from origin"


def test_client_with_a_certificate_of_another_ca_is_refused(
    mtls: MtlsSidecar, foreign_ca: DevCa
) -> None:
    async def scenario() -> None:
        # Trusts the right CA for the server, but its own identity comes from elsewhere.
        credentials = channel_credentials(
            mtls.ca.ca_cert, foreign_ca.client_cert, foreign_ca.client_key
        )
        channel = grpc.aio.secure_channel(mtls.address, credentials)
        await _assert_get_refused(mtls.address, mtls.ca, channel)

    run(scenario())


def test_plaintext_client_is_refused(mtls: MtlsSidecar) -> None:
    async def scenario() -> None:
        channel = grpc.aio.insecure_channel(mtls.address)
        await _assert_get_refused(mtls.address, mtls.ca, channel)

    run(scenario())


def test_client_refuses_a_sidecar_its_ca_did_not_issue(
    mtls: MtlsSidecar, foreign_ca: DevCa
) -> None:
    async def scenario() -> None:
        # Server authentication: the other half of mutual TLS.
        channel = grpc.aio.secure_channel(mtls.address, _client_credentials(foreign_ca))
        await _assert_get_refused(mtls.address, mtls.ca, channel)

    run(scenario())


def test_tls_without_a_client_ca_serves_clients_without_certificates(
    tmp_path: Path, memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    ca = ensure_dev_ca(tmp_path / "tls")
    sidecar = sidecar_factory([memcached], _sidecar_tls_env(ca, mutual=False))

    async def scenario() -> None:
        async with CacheClient.connect(
            sidecar.address, credentials=channel_credentials(ca.ca_cert)
        ) as cache:
            read = await cache.get("projects", uuid.uuid4().hex.encode())
            assert read.outcome is Outcome.LOAD
        channel = grpc.aio.insecure_channel(sidecar.address)
        async with channel:
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Stats(cache_pb2.StatsRequest(), timeout=_RPC_TIMEOUT_SECONDS)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE

    run(scenario())


def test_sidecar_with_an_unreadable_certificate_refuses_to_start(
    tmp_path: Path, memcached_factory: MemcachedFactory
) -> None:
    ca = ensure_dev_ca(tmp_path / "tls")
    missing = tmp_path / "tls" / "missing.pem"
    env = {
        **os.environ,
        **SIDECAR_ENV,
        **_sidecar_tls_env(ca),
        "AGENTIC_CACHE_TLS_CERT_FILE": str(missing),
        "AGENTIC_MEMCACHED_SERVERS": "127.0.0.1:1",
    }
    result = run_module("cache_sidecar", env=env, timeout=30)
    assert result.returncode == 2, result.stderr
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


# --- the development CA ------------------------------------------------------------------


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _leaves(ca: DevCa) -> dict[str, Path]:
    return {"server": ca.server_cert, "sidecar": ca.sidecar_cert, "client": ca.client_cert}


def _keys(ca: DevCa) -> list[Path]:
    return [ca.ca_key, ca.server_key, ca.sidecar_key, ca.client_key]


def _contents(ca: DevCa) -> dict[Path, bytes]:
    paths = [ca.ca_cert, *_leaves(ca).values(), *_keys(ca)]
    return {path: path.read_bytes() for path in paths}


def test_dev_ca_leaves_chain_to_the_ca_with_the_right_names_and_usages(tmp_path: Path) -> None:
    ca = ensure_dev_ca(tmp_path / "tls")
    root = _load(ca.ca_cert)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = {
        "server": ExtendedKeyUsageOID.SERVER_AUTH,
        "sidecar": ExtendedKeyUsageOID.SERVER_AUTH,
        "client": ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    for name, path in _leaves(ca).items():
        leaf = _load(path)
        leaf.verify_directly_issued_by(root)  # raises when the signature is not the CA's
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [usages[name]], name
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert lifetime.days <= 826, name
    for path in (ca.server_cert, ca.sidecar_cert):
        san = _load(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        assert "127.0.0.1" in ips


def test_dev_ca_keys_are_private_to_the_owner(tmp_path: Path) -> None:
    ca = ensure_dev_ca(tmp_path / "tls")
    for key in _keys(ca):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(ca.directory.stat().st_mode) == 0o700


def test_dev_ca_keeps_existing_files_unless_forced(tmp_path: Path) -> None:
    first = ensure_dev_ca(tmp_path / "tls")
    assert len(first.written) == 8
    before = _contents(first)

    again = ensure_dev_ca(tmp_path / "tls")
    assert again.written == ()
    assert _contents(again) == before

    forced = ensure_dev_ca(tmp_path / "tls", force=True)
    assert set(forced.written) == set(before)
    after = _contents(forced)
    assert all(after[path] != before[path] for path in before)


def test_dev_ca_reissues_a_missing_leaf_from_the_existing_ca(tmp_path: Path) -> None:
    first = ensure_dev_ca(tmp_path / "tls")
    before = _contents(first)
    first.client_key.unlink()

    again = ensure_dev_ca(tmp_path / "tls")
    assert set(again.written) == {again.client_cert, again.client_key}
    after = _contents(again)
    assert after[again.ca_cert] == before[again.ca_cert]
    assert after[again.server_cert] == before[again.server_cert]
    _load(again.client_cert).verify_directly_issued_by(_load(again.ca_cert))
    channel_credentials(again.ca_cert, again.client_cert, again.client_key)  # a matching pair


def test_dev_ca_reissues_every_leaf_when_the_ca_is_new(tmp_path: Path) -> None:
    first = ensure_dev_ca(tmp_path / "tls")
    first.ca_key.unlink()

    again = ensure_dev_ca(tmp_path / "tls")
    assert len(again.written) == 8
    root = _load(again.ca_cert)
    for path in _leaves(again).values():
        _load(path).verify_directly_issued_by(root)


def test_dev_ca_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "var" / "tls"
    assert devca_main(["--dir", str(directory)]) == 0
    assert capsys.readouterr().out.count("wrote ") == 8
    assert devca_main(["--dir", str(directory)]) == 0
    assert "kept" in capsys.readouterr().out
    assert devca_main(["--dir", str(directory), "--force"]) == 0
    assert capsys.readouterr().out.count("wrote ") == 8


def test_dev_ca_command_line_reports_an_unwritable_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert devca_main(["--dir", str(blocker / "tls")]) == 1
    assert "devtools.devca:" in capsys.readouterr().err


# --- credentials from files --------------------------------------------------------------


@pytest.fixture
def dev_ca(tmp_path: Path) -> DevCa:
    return ensure_dev_ca(tmp_path / "tls")


def test_credentials_build_from_the_dev_ca(dev_ca: DevCa) -> None:
    assert server_credentials(dev_ca.sidecar_cert, dev_ca.sidecar_key) is not None
    assert server_credentials(dev_ca.sidecar_cert, dev_ca.sidecar_key, dev_ca.ca_cert) is not None
    assert channel_credentials(dev_ca.ca_cert) is not None
    assert channel_credentials(dev_ca.ca_cert, dev_ca.client_cert, dev_ca.client_key) is not None


def test_a_missing_file_is_named(dev_ca: DevCa) -> None:
    missing = dev_ca.directory / "nope.pem"
    with pytest.raises(TlsConfigError, match=re.escape(str(missing))):
        server_credentials(dev_ca.sidecar_cert, missing)
    with pytest.raises(TlsConfigError, match=re.escape(str(missing))):
        server_credentials(dev_ca.sidecar_cert, dev_ca.sidecar_key, missing)
    with pytest.raises(TlsConfigError, match=re.escape(str(missing))):
        channel_credentials(missing)


def test_a_key_given_as_certificate_is_named_but_never_quoted(dev_ca: DevCa) -> None:
    key_pem = dev_ca.sidecar_key.read_text()
    body = key_pem.splitlines()[1]
    with pytest.raises(TlsConfigError, match=re.escape(str(dev_ca.sidecar_key))) as bad:
        server_credentials(dev_ca.sidecar_key, dev_ca.sidecar_key)
    assert body not in str(bad.value)
    assert "PRIVATE KEY" not in str(bad.value)


def test_a_certificate_with_the_wrong_key_is_refused(dev_ca: DevCa) -> None:
    with pytest.raises(TlsConfigError, match="does not match"):
        server_credentials(dev_ca.sidecar_cert, dev_ca.server_key)
    with pytest.raises(TlsConfigError, match=re.escape(str(dev_ca.sidecar_cert))):
        server_credentials(dev_ca.sidecar_cert, dev_ca.sidecar_cert)


def test_a_client_certificate_needs_its_key(dev_ca: DevCa) -> None:
    with pytest.raises(TlsConfigError, match="key"):
        channel_credentials(dev_ca.ca_cert, cert_file=dev_ca.client_cert)
    with pytest.raises(TlsConfigError, match="key"):
        channel_credentials(dev_ca.ca_cert, key_file=dev_ca.client_key)


def test_a_server_name_needs_credentials() -> None:
    with pytest.raises(ValueError, match="server_name"):
        CacheClient.connect("127.0.0.1:1", server_name="localhost")


# --- sidecar configuration ---------------------------------------------------------------


def test_tls_is_off_by_default() -> None:
    config = Config.from_env({})
    assert not config.tls_enabled
    assert (config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file) == ("",) * 3


def test_tls_settings_are_read() -> None:
    config = Config.from_env(
        {
            "AGENTIC_CACHE_TLS_CERT_FILE": "/tls/sidecar.pem",
            "AGENTIC_CACHE_TLS_KEY_FILE": "/tls/sidecar-key.pem",
            "AGENTIC_CACHE_TLS_CLIENT_CA_FILE": "/tls/ca.pem",
        }
    )
    assert config.tls_enabled
    assert config.tls_cert_file == "/tls/sidecar.pem"
    assert config.tls_key_file == "/tls/sidecar-key.pem"
    assert config.tls_client_ca_file == "/tls/ca.pem"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AGENTIC_CACHE_TLS_CERT_FILE": "/c.pem"}, "AGENTIC_CACHE_TLS_KEY_FILE"),
        ({"AGENTIC_CACHE_TLS_KEY_FILE": "/k.pem"}, "AGENTIC_CACHE_TLS_CERT_FILE"),
        ({"AGENTIC_CACHE_TLS_CLIENT_CA_FILE": "/ca.pem"}, "AGENTIC_CACHE_TLS_CLIENT_CA_FILE"),
        (
            {"AGENTIC_CACHE_TLS_CLIENT_CA_FILE": "/ca.pem", "AGENTIC_CACHE_TLS_KEY_FILE": " "},
            "AGENTIC_CACHE_TLS_CLIENT_CA_FILE",
        ),
    ],
)
def test_incomplete_tls_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Config.from_env(env)
