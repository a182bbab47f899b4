"""The task-kind path end to end: protos + a function + a registry entry = a working kind.

A throw-away kind, ``TASK_KIND_ECHO``, is added to a copy of ``protos/`` and generated
into a temporary directory, with its function and registration in a temporary module
(``echo_kind``, named in ``AGENTIC_TASK_KIND_MODULES``). A real API server and a real
worker run with that directory first on ``PYTHONPATH``, so its ``agentic.tasks.v1``
shadows ``build/gen``; nothing in the repository is edited and no servicer code is
written. The client runs in a subprocess too: this test process keeps its own
``agentic`` modules, generated from the real protos.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from tests._identity import Role, auth_env, token
from tests._processes import start_service
from tests._support import REPO
from tests.workers._stack import private_vhost, stack

SUBMIT_ECHO = "/agentic.tasks.v1.TaskService/SubmitEcho"

ECHO_MESSAGES = """
// Parameters of an echo task.
message EchoSpec {
  // What to echo.
  string text = 1 [(buf.validate.field).string.max_len = 1000];
}

// Result of an echo task.
message EchoResult {
  // The spec's text.
  string text = 1;
}
"""

ECHO_KIND = '''
"""The echo kind: its function and its registration, outside the repository."""

from agentic.tasks.v1 import tasks_pb2

from workers import Limits, Registration, TaskContext


def run_echo(spec: tasks_pb2.EchoSpec, context: TaskContext) -> tasks_pb2.EchoResult:
    context.raise_if_cancelled()
    context.report_progress(1.0, "echoed")
    return tasks_pb2.EchoResult(text=spec.text)


REGISTRATIONS = [
    Registration(
        kind=tasks_pb2.TASK_KIND_ECHO,
        spec_type=tasks_pb2.EchoSpec,
        result_type=tasks_pb2.EchoResult,
        run=run_echo,
        limits=Limits(soft_seconds=30.0, hard_seconds=60.0),
    )
]
'''

# The access table stays a static declaration: a new kind adds one entry to
# server/access/_table.py, which this test cannot edit. Switching authentication off would
# not help (its principal is an Administrator, but an RPC missing from the table is denied
# to everyone), so the server runs from this launcher, which adds the one entry a real kind
# would add and then starts the API server exactly as `python -m server` does.
ECHO_SERVER = f"""
from server.access import _table
from server.auth import Role

_table.RPC_ROLES[{SUBMIT_ECHO!r}] = frozenset({{Role.ADMINISTRATOR, Role.TECHNICAL_LEAD}})

from server.__main__ import main

main()
"""

ECHO_CLIENT = '''
"""Submit an echo, replay it, break its rules, watch it to the end; print what happened."""

import json
import sys
import uuid

import grpc
from agentic.tasks.v1 import tasks_pb2, tasks_pb2_grpc

address, bearer, text = sys.argv[1:4]
metadata = (("authorization", f"Bearer {bearer}"),)


def submit(**fields):
    request = tasks_pb2.SubmitEchoRequest(
        request_id=fields.pop("request_id", str(uuid.uuid4())),
        echo=tasks_pb2.EchoSpec(text=text),
        **fields,
    )
    return stub.SubmitEcho(request, metadata=metadata, timeout=10).task


def code(**fields):
    try:
        submit(**fields)
    except grpc.RpcError as error:
        return error.code().name
    return "OK"


with grpc.insecure_channel(address) as channel:
    stub = tasks_pb2_grpc.TaskServiceStub(channel)
    request_id = str(uuid.uuid4())
    task = submit(request_id=request_id)
    replay = submit(request_id=request_id)
    end = None
    watch = tasks_pb2.WatchTaskRequest(id=task.id)
    for item in stub.WatchTask(watch, metadata=metadata, timeout=20):
        if item.HasField("event") and item.event.terminal:
            end = item.event.task
            break
    print(json.dumps({
        "kind": tasks_pb2.TaskKind.Name(task.kind),
        "owner": task.owner_id,
        "replay_id": replay.id,
        "id": task.id,
        "state": tasks_pb2.TaskState.Name(end.state),
        "echoed": end.echo_result.text,
        "other_owner": code(owner_id="somebody-else"),
        "unreachable_project": code(project_id=str(uuid.uuid4())),
    }))
'''


def _insert_after(text: str, anchor: str, addition: str) -> str:
    assert text.count(anchor) == 1, f"tasks.proto changed: no single {anchor!r}"
    return text.replace(anchor, anchor + addition)


def add_echo_kind(tasks_proto: Path) -> None:
    """TASK_KIND_ECHO in the copy of tasks.proto, following the how-to step by step."""
    text = tasks_proto.read_text()
    text = _insert_after(
        text,
        "  TASK_KIND_PROBE = 1;\n",
        "  // Echoes a text (SubmitEcho).\n  TASK_KIND_ECHO = 99;\n",
    )
    text = _insert_after(
        text,
        "    ProbeSpec probe = 20;\n",
        "    // Set when kind is TASK_KIND_ECHO.\n    EchoSpec echo = 29;\n",
    )
    text = _insert_after(
        text,
        "    ProbeResult probe_result = 30;\n",
        "    // Result of a succeeded echo.\n    EchoResult echo_result = 39;\n",
    )
    text = _insert_after(
        text,
        "  rpc SubmitProbe(SubmitProbeRequest) returns (SubmitProbeResponse);\n",
        "\n  // Submits an echo: the task's result is its spec's text.\n"
        "  rpc SubmitEcho(SubmitEchoRequest) returns (SubmitEchoResponse);\n",
    )
    # The request and response are SubmitProbe's, with the echo spec in place of the probe.
    start = text.index("// Request for TaskService.SubmitProbe.")
    end = text.index("}\n", text.index("message SubmitProbeResponse")) + 2
    submit = text[start:end].replace("SubmitProbe", "SubmitEcho")
    submit = submit.replace("ProbeSpec probe", "EchoSpec echo").replace("to probe", "to echo")
    tasks_proto.write_text(text + ECHO_MESSAGES + "\n" + submit)


@pytest.fixture(scope="module")
def echo_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PYTHONPATH of the throw-away kind: its generated code, then its modules."""
    root = tmp_path_factory.mktemp("echo-kind")
    shutil.copytree(REPO / "protos" / "agentic", root / "protos" / "agentic")
    add_echo_kind(root / "protos" / "agentic" / "tasks" / "v1" / "tasks.proto")
    subprocess.run(
        [sys.executable, "protos/codegen.py", "--protos", root / "protos", "--out", root / "build"],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=60,
    )
    modules = root / "modules"
    modules.mkdir()
    for name, source in {
        "echo_kind": ECHO_KIND,
        "echo_server": ECHO_SERVER,
        "echo_client": ECHO_CLIENT,
    }.items():
        (modules / f"{name}.py").write_text(textwrap.dedent(source).lstrip())
    return os.pathsep.join([str(root / "build" / "gen"), str(modules)])


def test_proto_function_and_registry_entry_make_a_working_kind(
    echo_path: str, tmp_path: Path
) -> None:
    env = {"PYTHONPATH": echo_path, "AGENTIC_TASK_KIND_MODULES": "echo_kind"}
    with (
        private_vhost() as broker_url,
        stack(tmp_path, broker_url, f"sqlite:///{tmp_path / 'tasks.db'}", **env) as s,
    ):
        server = start_service(
            "echo_server",
            {
                **s.env,
                **auth_env(),
                "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
                "AGENTIC_METRICS_ADDRESS": "127.0.0.1:0",
                "AGENTIC_CACHE_ADDRESS": "",
                "AGENTIC_EVENTS_ENABLED": "false",
                "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
            },
            tmp_path / "server",
        )
        s.servers.append(server)  # stopped (and its exit code checked) with the stack
        s.start_worker(concurrency=1)
        lead = token("echo-lead", (Role.TECHNICAL_LEAD,))
        client = subprocess.run(
            [sys.executable, "-m", "echo_client", server.address, lead, "hello, kind"],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": echo_path},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert client.returncode == 0, client.stderr + server.log()
        seen = json.loads(client.stdout)
        metrics_url = f"http://127.0.0.1:{server.ready['metrics_port']}/metrics"
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            metrics = response.read().decode()
    assert seen == {
        "kind": "TASK_KIND_ECHO",
        "owner": "echo-lead",  # the owner rule filled in the caller
        "replay_id": seen["id"],  # idempotent on request_id
        "id": seen["id"],
        "state": "TASK_STATE_SUCCEEDED",
        "echoed": "hello, kind",
        "other_owner": "PERMISSION_DENIED",  # only an Administrator submits for others
        "unreachable_project": "NOT_FOUND",  # project reach, as for every kind
    }
    # The submit and its replay; the two refused calls never reached the counter.
    assert 'agentic_task_submits_total{kind="echo"} 2.0' in metrics
