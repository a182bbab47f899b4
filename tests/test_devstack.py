"""`make run`'s launcher starts a stack a new user can talk to, and stops it cleanly; with
`PROMETHEUS=1` also a Prometheus scraping every process with the repo's rules loaded."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML is pinned in requirements.lock; its stubs are not
from agentic.projects.v1 import projects_pb2 as pb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import tasks_pb2, tasks_pb2_grpc

from devtools.ports import free_port, port_bindable
from tests._identity import token_channel
from tests._support import REPO, wait_for
from tests.workers._stack import private_vhost


@pytest.fixture
def broker_names() -> Iterator[dict[str, str]]:
    """The running broker, but a private vhost of it (deleted afterwards, with whatever the
    stack's worker declared there, Celery's own exchanges included)."""
    with private_vhost() as url:
        yield {"AGENTIC_BROKER_URL": url}


def test_devstack_serves_and_stops_on_sigterm(tmp_path: Path, broker_names: dict[str, str]) -> None:
    env = {
        **os.environ,
        **broker_names,
        "AGENTIC_RUN_DIR": str(tmp_path),
        "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
        "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
        "AGENTIC_CACHE_METRICS_ADDRESS": "127.0.0.1:0",
        "AGENTIC_MEMCACHED_PORT": str(free_port()),
        # `make run PROMETHEUS=1`, checked on the same stack (a second one costs 20 s);
        # 1 s rather than 15 s so that the first scrape of each target comes sooner.
        "AGENTIC_RUN_PROMETHEUS": "1",
        "AGENTIC_PROMETHEUS_INTERVAL_SECONDS": "1",
    }
    env.pop("AGENTIC_PROMETHEUS_PORT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.devstack"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: any("agentic-backend is running" in line for line in lines),
            timeout=60,
            message="the devstack banner",
        )
        match = re.search(r"API \(gRPC, plaintext\): (\S+)", "".join(lines))
        assert match, "".join(lines)
        token = re.search(r"export TOKEN=(\S+)", "".join(lines))
        assert token, "the banner should print a development token"
        # The banner's token (alice: project manager + technical lead) works as printed.
        with token_channel(match.group(1), token.group(1)) as channel:
            stub = projects_pb2_grpc.ProjectServiceStub(channel)
            made = stub.CreateProject(
                pb.CreateProjectRequest(project=pb.Project(name="demo")),
                timeout=10,
            )
            assert made.project.id
            assert made.project.owner_id == "alice", "the owner defaults to the caller"
            got = stub.GetProject(pb.GetProjectRequest(id=made.project.id), timeout=10)
            assert got.project == made.project
            tasks = tasks_pb2_grpc.TaskServiceStub(channel)
            submitted = tasks.SubmitProbe(
                tasks_pb2.SubmitProbeRequest(
                    request_id=str(uuid.uuid4()),
                    probe=tasks_pb2.ProbeSpec(steps=2, step_millis=10),
                ),
                timeout=10,
            ).task
            watch = tasks.WatchTask(tasks_pb2.WatchTaskRequest(id=submitted.id), timeout=60)
            final = [r.event for r in watch if r.HasField("event") and r.event.terminal]
            assert [e.state for e in final] == [tasks_pb2.TASK_STATE_SUCCEEDED]
        # The sidecar on its private socket under the run directory, not on TCP.
        sidecar_socket = tmp_path / "run" / "cache" / "cache.sock"
        assert f"cache sidecar (gRPC):  unix:{sidecar_socket}" in "".join(lines)
        assert stat.S_IMODE(sidecar_socket.parent.stat().st_mode) == 0o700
        assert "UDP off" in "".join(lines)
        assert (tmp_path / "agentic.db").exists(), "the stack should use its embedded SQLite"
        prometheus_port = _check_prometheus("".join(lines))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
        assert port_bindable(prometheus_port), "Prometheus should stop with the stack"
    finally:
        if proc.poll() is None:
            # SIGTERM first: the devstack stops its children (a kill would orphan them).
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()


RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_JOBS = {"api", "cache-sidecar", "worker", "beat"}
# Prometheus hands static targets to its scrapers 5 s after start, then scrapes each at an
# offset within the interval (1 s here): every target has been scraped within about 6 s.
TARGETS_TIMEOUT_SECONDS = 30.0


def _prometheus_api(url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{url}/api/v1/{path}", timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def _check_prometheus(banner: str) -> int:
    """The banner's Prometheus has the repo's rule groups and every process up; its port."""
    match = re.search(r"Prometheus: +(http://127\.0\.0\.1:(\d+))", banner)
    assert match, f"the banner should print Prometheus's URL:\n{banner}"
    url, port = match.group(1), int(match.group(2))
    assert port != 9090, "a free port when the metrics ports are free ones"
    groups = _prometheus_api(url, "rules")["groups"]
    expected = {g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]}
    assert {g["name"] for g in groups} == expected
    assert all(Path(g["file"]) == RULES for g in groups), [g["file"] for g in groups]
    targets: list[dict[str, Any]] = []

    def all_up() -> bool:
        targets[:] = _prometheus_api(url, "targets?state=active")["activeTargets"]
        return {t["labels"]["job"] for t in targets if t["health"] == "up"} == PROMETHEUS_JOBS

    try:
        wait_for(all_up, timeout=TARGETS_TIMEOUT_SECONDS, message="every target up")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {json.dumps(targets, indent=1)}") from None
    assert len(targets) == len(PROMETHEUS_JOBS), targets
    return port


_TIME_WAIT = "06"  # TCP_TIME_WAIT in /proc/net/tcp's `st` column


def _loopback_tcp_states(port: int) -> set[str]:
    """The states of the IPv4 TCP sockets whose local port is ``port`` (Linux)."""
    states = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rpartition(":")[2], 16) == port:
            states.add(fields[3])
    return states


@pytest.mark.parametrize("reuse_address", [True, False], ids=["like-memcached", "plain"])
def test_a_live_listener_makes_the_port_taken(reuse_address: bool) -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse_address))
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not port_bindable(listener.getsockname()[1])


def test_a_port_with_only_time_wait_connections_is_free() -> None:
    """Ctrl-C on `make run` and at once `make run` again: memcached's old connections are
    in TIME-WAIT on its port for a minute, and memcached (SO_REUSEADDR) binds anyway."""
    with socket.socket() as listener:
        # Set as memcached sets it: its accepted connections, and so their TIME-WAIT
        # remnants, carry the option, which is what lets a new memcached bind.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(5)
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            served, _ = listener.accept()
            served.close()  # the server side closes first, so it is the one in TIME-WAIT
            assert client.recv(1) == b"", "the server's FIN should have arrived"
    wait_for(
        lambda: _TIME_WAIT in _loopback_tcp_states(port),
        timeout=5,
        message=f"a TIME-WAIT connection on port {port}",
    )
    # The situation of the bug: a plain bind still fails here.
    with socket.socket() as plain, pytest.raises(OSError, match="Address already in use"):
        plain.bind(("127.0.0.1", port))
    assert port_bindable(port)
