"""`make run`'s launcher starts a stack a new user can talk to, and stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentic.projects.v1 import projects_pb2 as pb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import tasks_pb2, tasks_pb2_grpc

from tests._identity import token_channel
from tests._support import REPO, free_port, wait_for
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
        "AGENTIC_CACHE_LISTEN_ADDRESS": "127.0.0.1:0",
        "AGENTIC_CACHE_METRICS_PORT": "0",
        "AGENTIC_MEMCACHED_PORT": str(free_port()),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.devstack"],
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
        assert "cache sidecar (gRPC)" in "".join(lines)
        assert "UDP off" in "".join(lines)
        assert (tmp_path / "agentic.db").exists(), "the stack should use its embedded SQLite"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()
