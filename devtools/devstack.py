"""``make run``: start the whole stack locally on its embedded defaults, stop it on Ctrl-C.

Run as ``python -m devtools.devstack``. Each process is started in dependency order, waited
for (it writes a ready file once it serves), and stopped in reverse order: the Python
processes with SIGTERM so each shuts down gracefully, then memcached and a private broker.
With ``AGENTIC_RUN_PROMETHEUS`` set (``make run PROMETHEUS=1``), a local Prometheus
(``devtools.prometheus``) scrapes the four processes and evaluates the repo's alert rules.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devtools.broker import BrokerError, ensure_broker
from devtools.devkeys import DevKeys
from devtools.memcached import Memcached, MemcachedError, MemcachedPortTaken
from devtools.ports import free_port, port_bindable
from devtools.prometheus import Prometheus, PrometheusConfig, PrometheusError
from server.auth import Role

REPO = Path(__file__).resolve().parent.parent
# State of the local stack (SQLite file, ready files); AGENTIC_RUN_DIR moves it (tests do).
VAR = Path(os.environ.get("AGENTIC_RUN_DIR", REPO / "var"))
READY_TIMEOUT_SECONDS = 60.0
SERVICE = "agentic.projects.v1.ProjectService"
TASKS = "agentic.tasks.v1.TaskService"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


class StackError(RuntimeError):
    """A part of the stack could not be started."""


@dataclass
class Process:
    """A started child process and what it reported when it became ready."""

    name: str
    popen: subprocess.Popen[bytes]
    ready: dict[str, object] = field(default_factory=dict)


def start_python(name: str, module: str, env: dict[str, str]) -> Process:
    """Start ``python -m module`` and wait until it has written its ready file."""
    ready_file = VAR / "run" / f"{name}.ready.json"
    ready_file.parent.mkdir(parents=True, exist_ok=True)
    ready_file.unlink(missing_ok=True)
    popen = subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO,
        env={**os.environ, **env, "AGENTIC_READY_FILE": str(ready_file)},
    )
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not ready_file.exists():
        if popen.poll() is not None:
            raise StackError(f"{name} exited with {popen.returncode} during start-up (see above)")
        if time.monotonic() > deadline:
            popen.kill()
            raise StackError(f"{name} did not become ready in {READY_TIMEOUT_SECONDS:.0f}s")
        time.sleep(0.05)
    return Process(name, popen, json.loads(ready_file.read_text()))


def start_memcached(port: int) -> Memcached:
    """A private memcached on loopback with UDP off (the only safe way to run it)."""
    memcached = Memcached(port)
    try:
        memcached.start(timeout_seconds=READY_TIMEOUT_SECONDS)
    except MemcachedPortTaken as exc:
        raise StackError(f"{exc}; set AGENTIC_MEMCACHED_PORT to a free port") from exc
    except MemcachedError as exc:
        raise StackError(str(exc)) from exc
    return memcached


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if "@" in rest else url


def stop_all(processes: list[Process]) -> None:
    """SIGTERM each process, newest first, and wait for it (kill after 20 s)."""
    for proc in reversed(processes):
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(20)
            except subprocess.TimeoutExpired:
                proc.popen.kill()


SIDECAR_SOCKET = VAR / "run" / "cache" / "cache.sock"
"""The cache sidecar's socket; its directory is the sidecar's own (mode 0700)."""

DEV_AUTH = VAR / "dev-auth"
"""Development signing keys, generated on the first ``make run`` (never for production)."""
DEMO_ROLES = [Role.PROJECT_MANAGER, Role.TECHNICAL_LEAD]


BEAT_IDENTITY = "agentic-beat"
"""The beat's service identity on the development stack."""
BEAT_TOKEN_TTL_SECONDS = 30 * 86400  # a month of make run; the beat re-reads the file per fire


def beat_env(api: Process, api_env: dict[str, str], keys: DevKeys) -> dict[str, str]:
    """The beat's environment: the API server just started, and a token file of its own.

    An Administrator, as the operator's scheduler is: the jobs coming after health_probe
    (retention, backup) call Administrator RPCs. Its metrics port follows the API's: 9466,
    or a free one when the API's asks for one (a second stack beside this one, the tests).
    """
    token_file = VAR / "run" / "beat.token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.touch(mode=0o600)
    token_file.write_text(
        keys.mint(BEAT_IDENTITY, [Role.ADMINISTRATOR], ttl_seconds=BEAT_TOKEN_TTL_SECONDS)
    )
    free = os.environ.get("AGENTIC_METRICS_ADDRESS", "").endswith(":0")
    return {
        "DATABASE_URL": api_env["DATABASE_URL"],
        "AGENTIC_BEAT_API_ADDRESS": f"127.0.0.1:{api.ready['grpc_port']}",
        "AGENTIC_BEAT_TOKEN_FILE": str(token_file),
        "AGENTIC_BEAT_METRICS_ADDRESS": os.environ.get(
            "AGENTIC_BEAT_METRICS_ADDRESS", "127.0.0.1:0" if free else "127.0.0.1:9466"
        ),
    }


RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_INTERVAL_SECONDS = 15.0  # as deploy/prometheus/prometheus.yml (compose) scrapes


def prometheus_wanted() -> bool:
    """``make run PROMETHEUS=1`` (AGENTIC_RUN_PROMETHEUS): also run a local Prometheus."""
    value = os.environ.get("AGENTIC_RUN_PROMETHEUS", "").strip().lower()
    return value in {"1", "true", "yes", "on"}


def start_prometheus(processes: list[Process]) -> Prometheus:
    """A local Prometheus scraping each process's actual metrics port, with the repo's rules.

    Job names are compose's (deploy/prometheus/prometheus.yml), so a query or panel reads
    the same under both. Its port is 9090, AGENTIC_PROMETHEUS_PORT, or a free one when the
    API's metrics port is (a second stack beside this one, the tests); it scrapes and
    evaluates every 15 s, or every AGENTIC_PROMETHEUS_INTERVAL_SECONDS.
    """
    jobs = {"api": "api", "sidecar": "cache-sidecar", "worker": "worker", "beat": "beat"}
    targets = {
        jobs[proc.name]: [f"127.0.0.1:{proc.ready['metrics_port']}"]
        for proc in processes
        if proc.name in jobs and proc.ready.get("metrics_port")
    }
    raw = os.environ.get("AGENTIC_PROMETHEUS_PORT", "").strip()
    if raw and not raw.isdigit():
        raise StackError(f"AGENTIC_PROMETHEUS_PORT={raw!r} is not a port number")
    free = os.environ.get("AGENTIC_METRICS_ADDRESS", "").endswith(":0")
    port = int(raw) if raw else free_port() if free else 9090
    # Shorter for a drill by hand or a test that waits for the first scrapes.
    interval = os.environ.get("AGENTIC_PROMETHEUS_INTERVAL_SECONDS", "").strip()
    try:
        interval_seconds = float(interval) if interval else PROMETHEUS_INTERVAL_SECONDS
    except ValueError:
        raise StackError(
            f"AGENTIC_PROMETHEUS_INTERVAL_SECONDS={interval!r} is not a number"
        ) from None
    if interval_seconds <= 0:
        raise StackError(f"AGENTIC_PROMETHEUS_INTERVAL_SECONDS={interval!r} must be positive")
    if not port_bindable(port):
        raise StackError(f"Prometheus: port {port} is taken; set AGENTIC_PROMETHEUS_PORT")
    prometheus = Prometheus(
        PrometheusConfig(
            scrape_targets=targets,
            rule_files=[RULES],
            workdir=VAR / "prometheus",
            scrape_interval_seconds=interval_seconds,
            evaluation_interval_seconds=interval_seconds,
            port=port,
        )
    )
    try:
        return prometheus.start(timeout_seconds=READY_TIMEOUT_SECONDS)
    except PrometheusError as exc:
        raise StackError(f"Prometheus: {exc}") from exc


def banner(
    api: Process,
    sidecar: Process,
    beat: Process,
    memcached: Memcached,
    broker_url: str,
    *,
    started: bool,
    token: str,
    worker: Process | None = None,
    prometheus: Prometheus | None = None,
) -> str:
    """What a new user needs to talk to the stack."""
    worker_port = worker.ready.get("metrics_port") if worker else None
    address = f"127.0.0.1:{api.ready['grpc_port']}"
    grpcurl = REPO / ".venv" / "bin" / "grpcurl"
    create_body = json.dumps({"project": {"name": "demo"}})
    probe = {"steps": 5, "step_millis": 200}
    probe_body = json.dumps({"request_id": str(uuid.uuid4()), "probe": probe})
    watch_body = json.dumps({"id": "<task id>"})
    roles = " ".join(f"--role {r.value}" for r in DEMO_ROLES)
    mint = f".venv/bin/python -m devtools.devkeys mint --dir {DEV_AUTH} --sub alice {roles}"
    auth = '-H "authorization: Bearer $TOKEN"'
    return "\n".join(
        [
            "",
            "agentic-backend is running.",
            f"  API (gRPC, plaintext): {address}",
            f"  metrics:               http://127.0.0.1:{api.ready['metrics_port']}/metrics",
            f"  cache sidecar (gRPC):  {sidecar.ready['grpc_address']}",
            f"  memcached:             127.0.0.1:{memcached.port} (UDP off)",
            f"  RabbitMQ:              {_redact(broker_url)}"
            + (" (private node, data in var/rabbitmq)" if started else " (already running)"),
            "  Celery worker:         1 (python -m workers)"
            + (f", metrics http://127.0.0.1:{worker_port}/metrics" if worker_port else ""),
            f"  beat (scheduler):      python -m workers.beat as {BEAT_IDENTITY}, metrics "
            f"http://127.0.0.1:{beat.ready['metrics_port']}/metrics",
            *(
                [
                    f"  Prometheus:            {prometheus.url} (firing: {prometheus.url}/alerts), "
                    f"rules {RULES.relative_to(REPO)}"
                ]
                if prometheus
                else []
            ),
            "Every call but health and reflection needs a token (dev keys in var/dev-auth):",
            f"  export TOKEN={token}",
            f"  (alice, {' + '.join(r.value for r in DEMO_ROLES)}, 12 h; mint more: {mint})",
            "Try:",
            f"  {grpcurl} -plaintext {address} list",
            f"  {grpcurl} -plaintext {auth} -d '{create_body}' {address} {SERVICE}/CreateProject",
            f"  {grpcurl} -plaintext {auth} -d '{probe_body}' {address} {TASKS}/SubmitProbe",
            f"  {grpcurl} -plaintext {auth} -d '{watch_body}' {address} {TASKS}/WatchTask",
            "Ctrl-C stops everything.",
            "",
        ]
    )


def main() -> None:
    """Start the stack, print how to use it, run until interrupted."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    processes: list[Process] = []
    memcached: Memcached | None = None
    stop_broker: Callable[[], None] | None = None
    prometheus: Prometheus | None = None
    try:
        try:
            broker_url, stop_broker = ensure_broker(
                os.environ.get("AGENTIC_BROKER_URL", DEFAULT_BROKER_URL), VAR
            )
        except BrokerError as exc:
            raise StackError(f"RabbitMQ: {exc}") from exc
        memcached = start_memcached(int(os.environ.get("AGENTIC_MEMCACHED_PORT", "11211")))
        sidecar_env = {
            # A private Unix socket (the sidecar creates var/run/cache, mode 0700): no other
            # user of the machine can read or fill the cache.
            "AGENTIC_CACHE_LISTEN_ADDRESS": os.environ.get(
                "AGENTIC_CACHE_LISTEN_ADDRESS", f"unix:{SIDECAR_SOCKET}"
            ),
            "AGENTIC_MEMCACHED_SERVERS": memcached.address,
            "AGENTIC_BROKER_URL": broker_url,
        }
        sidecar = start_python("sidecar", "cache_sidecar", sidecar_env)
        processes.append(sidecar)
        keys = DevKeys(DEV_AUTH)
        keys.ensure()  # first run: a local key pair; later runs reuse it
        api_env = {
            "AGENTIC_AUTH_JWKS": str(keys.jwks_path),
            "AGENTIC_LISTEN_ADDRESS": os.environ.get("AGENTIC_LISTEN_ADDRESS", "127.0.0.1:50051"),
            "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{VAR / 'agentic.db'}"),
            "AGENTIC_CACHE_ADDRESS": str(sidecar.ready["grpc_address"]),
            "AGENTIC_BROKER_URL": broker_url,
        }
        api = start_python("api", "server", api_env)
        processes.append(api)
        worker_env = {
            "AGENTIC_BROKER_URL": broker_url,
            "DATABASE_URL": api_env["DATABASE_URL"],
            # Compliance reports read rule sets through the same sidecar as GetRuleSet.
            "AGENTIC_CACHE_ADDRESS": api_env["AGENTIC_CACHE_ADDRESS"],
            # Like the beat's: 9467, or a free port when the API's asks for one.
            "AGENTIC_WORKER_METRICS_ADDRESS": os.environ.get(
                "AGENTIC_WORKER_METRICS_ADDRESS",
                "127.0.0.1:0"
                if os.environ.get("AGENTIC_METRICS_ADDRESS", "").endswith(":0")
                else "127.0.0.1:9467",
            ),
        }
        worker = start_python("worker", "workers", worker_env)
        processes.append(worker)
        beat = start_python("beat", "workers.beat", beat_env(api, api_env, keys))
        processes.append(beat)
        if prometheus_wanted():
            prometheus = start_prometheus(processes)
        print(
            banner(
                api,
                sidecar,
                beat,
                memcached,
                broker_url,
                started=stop_broker is not None,
                token=keys.mint("alice", DEMO_ROLES, ttl_seconds=12 * 3600),
                worker=worker,
                prometheus=prometheus,
            ),
            flush=True,
        )
        while not stop.is_set():
            for proc in processes:
                if proc.popen.poll() is not None:
                    raise StackError(f"{proc.name} exited with {proc.popen.returncode}")
            if memcached.pid is None:
                raise StackError("memcached exited")
            if prometheus is not None and prometheus.exited():
                raise StackError(f"Prometheus exited (see {prometheus.log_path})")
            stop.wait(0.5)
    except StackError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        status = 1
    else:
        status = 0
    # Reverse start order: Prometheus (it only watches), the Python processes drain, then
    # what they depend on.
    if prometheus is not None:
        prometheus.stop()
    stop_all(processes)
    if memcached is not None:
        memcached.stop()
    if stop_broker is not None:
        stop_broker()
    sys.exit(status)


if __name__ == "__main__":
    main()
