"""The Node example (examples/node) against a real stack, as a user of another language runs it.

The example is copied to a temporary directory and its pinned packages are installed there
from the npm registry (``npm ci``, the npm cache in the same directory, so nothing lands in
``$HOME``); it then loads only the committed descriptor set (``protos/agentic.protoset``), so
this also proves that file is enough for a client without our toolchain. The stack is a
real API server and worker on a private RabbitMQ vhost. Everything the client claims is
read back through the Python stubs, and the row count is counted here from the CSV.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentic.artifacts.v1 import artifacts_pb2 as apb
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import tasks_pb2 as pb
from agentic.tasks.v1 import tasks_pb2_grpc

from devtools.descriptors import PROTOSET
from tests._identity import Role, authorized_channel, token
from tests._support import REPO
from tests.workers._stack import TIMEOUT, Stack, private_vhost, stack

EXAMPLE = REPO / "examples" / "node"
NPM_CI_SECONDS = 180
CLIENT_SECONDS = 60
USER = "node-example"
ROLES = (Role.PROJECT_MANAGER,)  # the least role that may create projects and uploads

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None, reason="node is not installed (make system-deps installs it)"
)

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def _parse(stdout: str) -> list[tuple[str, dict[str, str]]]:
    """The client's ``what key=value ...`` lines (quoted values are JSON strings)."""
    lines = []
    for text in stdout.splitlines():
        what, _, rest = text.partition(" ")
        fields = {
            key: json.loads(value) if value.startswith('"') else value
            for key, value in _FIELD.findall(rest)
        }
        lines.append((what, fields))
    return lines


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/node with its locked packages installed."""
    npm = shutil.which("npm")
    assert npm is not None, "node is installed but npm is not (make system-deps installs it)"
    where = tmp_path_factory.mktemp("node") / "example"
    shutil.copytree(EXAMPLE, where, ignore=shutil.ignore_patterns("node_modules"))
    env = {
        **os.environ,
        "npm_config_cache": str(where.parent / "npm-cache"),
        "npm_config_update_notifier": "false",
        "npm_config_audit": "false",
        "npm_config_fund": "false",
    }
    try:
        # --ignore-scripts: the locked packages need no install step (protobufjs's
        # postinstall only checks versions), and none of them runs code at install time.
        result = subprocess.run(
            [npm, "ci", "--ignore-scripts"],
            cwd=where,
            env=env,
            capture_output=True,
            text=True,
            timeout=NPM_CI_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"npm ci took over {NPM_CI_SECONDS}s: {exc.stderr!r}") from exc
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return where


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An API server and one worker on a private vhost."""
    workdir = tmp_path_factory.mktemp("node-stack")
    with private_vhost() as broker, stack(workdir, broker, f"sqlite:///{workdir / 't.db'}") as s:
        s.start_server()
        s.start_worker(concurrency=1)
        yield s


def test_node_client_profiles_a_csv_and_reads_a_field_violation(
    example: Path, pipeline: Stack
) -> None:
    csv_path = example / "sample.csv"
    with csv_path.open(newline="") as handle:
        rows = sum(1 for _ in csv.reader(handle)) - 1  # the header is not a row
    assert rows > 0
    address = pipeline.servers[0].address
    result = subprocess.run(
        ["node", "client.js", str(csv_path)],
        cwd=example,
        env={
            **os.environ,
            "AGENTIC_ADDRESS": address,
            "AGENTIC_TOKEN": token(USER, ROLES),
            "AGENTIC_PROTOSET": str(PROTOSET),
        },
        capture_output=True,
        text=True,
        timeout=CLIENT_SECONDS,
    )
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, output
    lines = _parse(result.stdout)
    first = {what: fields for what, fields in reversed(lines)}

    # The project exists, owned by the client's principal.
    channel = authorized_channel(address)
    try:
        project = (
            projects_pb2_grpc.ProjectServiceStub(channel)
            .GetProject(ppb.GetProjectRequest(id=first["project"]["id"]), timeout=TIMEOUT)
            .project
        )
        assert project.name == first["project"]["name"], output
        assert project.owner_id == USER, output

        # The CSV arrived whole: the artifact holds exactly the file's bytes.
        artifact = (
            artifacts_pb2_grpc.ArtifactServiceStub(channel)
            .GetArtifact(apb.GetArtifactRequest(id=first["artifact"]["id"]), timeout=TIMEOUT)
            .artifact
        )
        assert artifact.state == apb.ARTIFACT_STATE_READY, output
        assert artifact.project_id == project.id
        assert artifact.sha256 == hashlib.sha256(csv_path.read_bytes()).hexdigest(), output

        # The profile succeeded and counted the rows we counted.
        task = (
            tasks_pb2_grpc.TaskServiceStub(channel)
            .GetTask(pb.GetTaskRequest(id=first["task"]["id"]), timeout=TIMEOUT)
            .task
        )
    finally:
        channel.close()
    assert task.state == pb.TASK_STATE_SUCCEEDED, (task.error, output)
    assert task.profile_dataset.dataset.artifact_id == artifact.id
    assert task.profile_dataset_result.profile.row_count == rows, output
    assert first["result"]["row_count"] == str(rows), output
    assert first["final"] == {"task": task.id, "state": "SUCCEEDED"}, output

    # The watch printed the events in order up to the terminal one.
    progress = [fields for what, fields in lines if what == "progress"]
    sequences = [int(p["sequence"]) for p in progress]
    assert sequences == list(range(1, len(sequences) + 1)), output
    assert sequences[-1] == task.last_sequence, output
    assert progress[-1]["state"] == "SUCCEEDED", output

    # The deliberately bad request's BadRequest, decoded from grpc-status-details-bin.
    violations = [fields for what, fields in lines if what == "violation"]
    assert [v["field"] for v in violations] == ["profile_dataset.top_k"], output
    assert violations[0]["message"], output
    assert first["error"]["code"] == "INVALID_ARGUMENT", output
