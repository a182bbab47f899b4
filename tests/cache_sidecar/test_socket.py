"""The sidecar is closed by default: a private Unix socket, and TCP only with mTLS or by name.

Only a client of the sidecar's user that dials the right path reaches it: the wrong path
and another user (a child process running as ``nobody``) get UNAVAILABLE. The socket
directory must be private, a dead predecessor's socket is replaced and a live one never
taken over. TCP needs mTLS (a client without a certificate fails the handshake:
``test_mtls.py::test_client_without_a_certificate_is_refused`` and its neighbours), or
the named insecure mode, on loopback only.

The sockets live in a short directory of /tmp opened to everyone (0755), so that only the
sidecar's own directory (0700) stands between ``nobody`` and the socket; pytest's
``tmp_path`` sits under a root-only directory, which would prove nothing.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_sidecar import Config, ConfigError
from devtools.memcached import Memcached
from tests._processes import SIDECAR_ENV, Service, loopback_tcp, run_module
from tests.cache_sidecar._support import SidecarFactory

_RPC_TIMEOUT_SECONDS = 3.0

# Run as another user: connects to the socket, then calls Stats through gRPC.
_PROBE = r"""
import socket, sys
import grpc
from agentic.cache.v1 import cache_pb2, cache_pb2_grpc
path = sys.argv[1]
probe = socket.socket(socket.AF_UNIX)
try:
    probe.connect(path)
    print("connect: ok")
except OSError as exc:
    print("connect:", type(exc).__name__)
finally:
    probe.close()
with grpc.insecure_channel("unix:" + path) as channel:
    try:
        cache_pb2_grpc.CacheServiceStub(channel).Stats(cache_pb2.StatsRequest(), timeout=3)
        print("rpc: OK")
    except grpc.RpcError as exc:
        print("rpc:", exc.code().name)
"""


@pytest.fixture
def home() -> Iterator[Path]:
    """A short directory everyone may traverse; the sidecar's own directory goes inside."""
    path = Path(tempfile.mkdtemp(prefix="agentic-sock-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _unix(path: Path) -> dict[str, str]:
    return {"AGENTIC_CACHE_LISTEN_ADDRESS": f"unix:{path}"}


def _stats_code(address: str) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        try:
            cache_pb2_grpc.CacheServiceStub(channel).Stats(
                cache_pb2.StatsRequest(), timeout=_RPC_TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _start_refused(env: dict[str, str]) -> str:
    """``python -m cache_sidecar`` with ``env`` must refuse to start; its stderr."""
    full = {**os.environ, **SIDECAR_ENV, "AGENTIC_MEMCACHED_SERVERS": "127.0.0.1:1", **env}
    result = run_module("cache_sidecar", env=full, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to start" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def _interpreter(as_nobody: bool) -> str:
    """A Python of our version that ``nobody`` may run: the venv's points into /root here."""
    if not as_nobody:
        return sys.executable
    system = Path("/usr/bin/python3")
    version = subprocess.run(
        [str(system), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if version.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip(f"no Python {sys.version_info[:2]} that nobody may run")
    return str(system)


# The packages the probe imports. ``nobody`` gets copies of them in the open directory:
# the venv and the generated code may sit under a directory only we may enter (a fresh
# clone under ``mktemp -d``, say), where nobody's import would fail before the probe runs.
_PROBE_PACKAGES = ("grpc", "google", "agentic", "buf", "typing_extensions")


def _readable_packages(home: Path) -> Path:
    """Copies of the probe's packages (and modules) under ``home``, readable by everyone."""
    target = home / "pylib"
    for name in _PROBE_PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None, name
        if spec.submodule_search_locations is None:  # a module of one file
            assert spec.origin is not None, name
            target.mkdir(exist_ok=True)
            shutil.copy(spec.origin, target)
            continue
        for location in dict.fromkeys(spec.submodule_search_locations):
            shutil.copytree(location, target / name, dirs_exist_ok=True)
    for directory, _, _ in os.walk(target):
        Path(directory).chmod(0o755)
    return target


def _probe(path: Path, *, as_nobody: bool) -> list[str]:
    user = pwd.getpwnam("nobody") if as_nobody else None
    # Our packages (grpc, the generated stubs): where this process found them, or for
    # nobody copies it may read beside the socket's directory.
    search = (
        [str(_readable_packages(path.parent.parent))] if as_nobody else [p for p in sys.path if p]
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(search)}
    result = subprocess.run(
        [_interpreter(as_nobody), "-c", _PROBE, str(path)],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        user=None if user is None else user.pw_uid,
        group=None if user is None else user.pw_gid,
        extra_groups=None if user is None else [],
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:2]


# --- who can reach it ------------------------------------------------------------------


def test_the_socket_directory_is_created_private_and_served(
    home: Path, memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    path = home / "run" / "cache.sock"
    sidecar = sidecar_factory([memcached], _unix(path))
    assert sidecar.address == f"unix:{path}"
    assert stat.S_IMODE((home / "run").stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _stats_code(sidecar.address) is grpc.StatusCode.OK
    health = run_module(
        "server.healthcheck", sidecar.address, "agentic.cache.v1.CacheService", timeout=30
    )
    assert health.returncode == 0, health.stdout + health.stderr


def test_a_client_on_the_wrong_path_cannot_reach_it(
    home: Path, memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    sidecar_factory([memcached], _unix(home / "run" / "cache.sock"))
    assert _stats_code(f"unix:{home / 'run' / 'other.sock'}") is grpc.StatusCode.UNAVAILABLE
    assert _stats_code(f"unix:{home / 'elsewhere' / 'cache.sock'}") is (grpc.StatusCode.UNAVAILABLE)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as nobody")
def test_another_user_cannot_connect(
    home: Path, memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    path = home / "run" / "cache.sock"
    sidecar_factory([memcached], _unix(path))
    # The same probe as the sidecar's user gets through: the refusal below is the user's.
    assert _probe(path, as_nobody=False) == ["connect: ok", "rpc: OK"]
    assert _probe(path, as_nobody=True) == ["connect: PermissionError", "rpc: UNAVAILABLE"]


# --- the directory ---------------------------------------------------------------------


def test_a_directory_open_to_others_refuses_the_start(home: Path) -> None:
    (home / "run").mkdir(mode=0o755)
    (home / "run").chmod(0o755)
    stderr = _start_refused(_unix(home / "run" / "cache.sock"))
    assert f"socket directory {home / 'run'} has mode 0755" in stderr
    assert f"chmod 700 {home / 'run'}" in stderr
    assert not (home / "run" / "cache.sock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_directory_of_another_user_refuses_the_start(home: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    (home / "run").mkdir(mode=0o700)
    os.chown(home / "run", nobody.pw_uid, nobody.pw_gid)
    stderr = _start_refused(_unix(home / "run" / "cache.sock"))
    assert f"belongs to uid {nobody.pw_uid}, not to this process's uid 0" in stderr


# --- stale and live sockets ------------------------------------------------------------


def test_a_dead_predecessors_socket_is_replaced(
    home: Path, memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    (home / "run").mkdir(mode=0o700)
    path = home / "run" / "cache.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))  # bound, never listening, then gone: as a killed process leaves it
    dead.close()
    assert stat.S_ISSOCK(path.lstat().st_mode)
    sidecar = sidecar_factory([memcached], _unix(path))
    assert _stats_code(sidecar.address) is grpc.StatusCode.OK


def test_a_live_sidecar_is_not_displaced_by_a_second_one(
    home: Path, memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    path = home / "run" / "cache.sock"
    first = sidecar_factory([memcached], _unix(path))
    inode = path.stat().st_ino
    stderr = _start_refused({**_unix(path), "AGENTIC_MEMCACHED_SERVERS": memcached.address})
    assert f"another cache sidecar is serving on {path}" in stderr
    assert path.stat().st_ino == inode, "the second sidecar replaced the live socket"
    assert _stats_code(first.address) is grpc.StatusCode.OK


def test_a_live_socket_of_another_program_is_not_taken_over(home: Path) -> None:
    (home / "run").mkdir(mode=0o700)
    path = home / "run" / "cache.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        stderr = _start_refused(_unix(path))
        assert f"a process is serving on {path}" in stderr
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # still the listener's


def test_a_file_that_is_not_a_socket_is_left_alone(home: Path) -> None:
    (home / "run").mkdir(mode=0o700)
    path = home / "run" / "cache.sock"
    path.write_text("precious")
    stderr = _start_refused(_unix(path))
    assert f"{path} exists and is not a socket" in stderr
    assert path.read_text() == "precious"


def test_a_stopped_sidecar_removes_its_socket_and_a_successor_starts(
    home: Path, memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    path = home / "run" / "cache.sock"
    first: Service = sidecar_factory([memcached], _unix(path))
    assert first.stop() == 0, first.log()
    assert not path.exists()
    second = sidecar_factory([memcached], _unix(path))
    assert _stats_code(second.address) is grpc.StatusCode.OK


# --- TCP -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"AGENTIC_CACHE_LISTEN_ADDRESS": "0.0.0.0:50052"},
        # The named mode is for loopback only.
        {
            "AGENTIC_CACHE_LISTEN_ADDRESS": "0.0.0.0:50052",
            "AGENTIC_CACHE_INSECURE_LOOPBACK_TCP": "1",
        },
        {
            "AGENTIC_CACHE_LISTEN_ADDRESS": "localhost:50052",
            "AGENTIC_CACHE_INSECURE_LOOPBACK_TCP": "1",
        },
        # TLS without client certificates still lets any host that reaches the port fill.
        {
            "AGENTIC_CACHE_LISTEN_ADDRESS": "10.1.2.3:50052",
            "AGENTIC_CACHE_TLS_CERT_FILE": "/tls/sidecar.pem",
            "AGENTIC_CACHE_TLS_KEY_FILE": "/tls/sidecar-key.pem",
        },
    ],
)
def test_tcp_beyond_loopback_without_mtls_is_a_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="TCP beyond loopback needs mTLS"):
        Config.from_env(env)


def test_loopback_tcp_needs_the_named_mode() -> None:
    with pytest.raises(ConfigError, match="AGENTIC_CACHE_INSECURE_LOOPBACK_TCP=true"):
        Config.from_env({"AGENTIC_CACHE_LISTEN_ADDRESS": "127.0.0.1:50052"})
    for host in ("127.0.0.1", "[::1]"):
        config = Config.from_env(
            {
                "AGENTIC_CACHE_LISTEN_ADDRESS": f"{host}:0",
                "AGENTIC_CACHE_INSECURE_LOOPBACK_TCP": "true",
            }
        )
        assert config.transport_warning is not None


def test_tcp_with_mtls_may_listen_anywhere() -> None:
    config = Config.from_env(
        {
            "AGENTIC_CACHE_LISTEN_ADDRESS": "0.0.0.0:50052",
            "AGENTIC_CACHE_TLS_CERT_FILE": "/tls/sidecar.pem",
            "AGENTIC_CACHE_TLS_KEY_FILE": "/tls/sidecar-key.pem",
            "AGENTIC_CACHE_TLS_CLIENT_CA_FILE": "/tls/ca.pem",
        }
    )
    assert config.transport_warning is None


@pytest.mark.parametrize(
    "value",
    ["unix-abstract:agentic", "unix:", "unix://relative/cache.sock", "unix:/" + "d" * 120],
)
def test_unusable_socket_addresses_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError, match="AGENTIC_CACHE_LISTEN_ADDRESS"):
        Config.from_env({"AGENTIC_CACHE_LISTEN_ADDRESS": value})


def test_the_sidecar_refuses_to_start_on_a_public_plaintext_port() -> None:
    stderr = _start_refused({"AGENTIC_CACHE_LISTEN_ADDRESS": "0.0.0.0:0"})
    assert "TCP beyond loopback needs mTLS" in stderr


def test_the_named_loopback_mode_serves_with_a_warning(
    memcached: Memcached, sidecar_factory: SidecarFactory
) -> None:
    sidecar = sidecar_factory([memcached], loopback_tcp())
    assert sidecar.address == f"127.0.0.1:{sidecar.port}"
    assert _stats_code(sidecar.address) is grpc.StatusCode.OK
    log = sidecar.log()
    assert "WARNING" in log
    assert "without client certificates: any local process can read and fill the cache" in log
