"""The ``agentic`` CLI against a real pipeline, run as a user runs it: its own process.

In a terminal (tmux), the progress bar of ``tasks submit probe --wait`` moves and the
screen ends on SUCCEEDED; ``--output json`` prints one parseable object per line with the
documented fields; each exit code comes from a real case; an upload killed half-way
resumes from the server's committed size, sends only the rest and ends with the file's
sha256; a download resumes from the partial file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import random
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from agentic.artifacts.v1 import artifacts_pb2 as apb
from agentic.tasks.v1 import tasks_pb2 as pb

from devtools.devca import ensure_dev_ca
from devtools.ports import free_port
from tests._scrape import metric, metrics_text
from tests._support import REPO, wait_for
from tests.cli._cli import CliEnv, described, json_lines
from tests.cli.conftest import Pipeline
from tests.workers._stack import TIMEOUT, wait_state

# --- in a real terminal ---------------------------------------------------------------


def _tmux(socket: Path, *args: str) -> str:
    # A private tmux server (its own socket): nothing of the user's tmux is touched.
    return subprocess.run(
        ["tmux", "-S", str(socket), *args], check=True, capture_output=True, text=True, timeout=10
    ).stdout


@pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"
)
def test_probe_wait_in_a_terminal_shows_a_moving_bar_and_succeeded(
    cli: CliEnv, tmp_path: Path
) -> None:
    socket = tmp_path / "tmux.sock"
    command = " ".join(
        shlex.quote(part)
        for part in cli.command(
            "tasks", "submit", "probe", "--steps", "20", "--step-millis", "100", "--wait"
        )
    )
    env = [
        f"-e{key}={value}"
        for key, value in cli.env().items()
        if key.startswith(("AGENTIC_", "XDG_"))
    ]
    _tmux(
        socket,
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "30",
        "-c",
        str(REPO),
        *env,
        "sh",
        "-c",
        f"{command}; echo EXIT=$?; sleep 60",
    )
    try:
        screens: list[str] = []
        fractions: set[int] = set()

        def finished() -> bool:
            screen = _tmux(socket, "capture-pane", "-p")
            screens.append(screen)
            fractions.update(int(p) for p in re.findall(r"\b(\d{1,3})%", screen))
            return "EXIT=" in screen

        wait_for(finished, timeout=30, message="the CLI to end in tmux")
        final = screens[-1]
        assert "EXIT=0" in final, final
        assert "SUCCEEDED" in final, final
        moving = fractions - {0, 100}
        assert len(moving) >= 2, f"the bar showed only {sorted(fractions)}; last screen:\n{final}"
        # Colours on a terminal (capture-pane -e keeps the escape sequences) ...
        assert "\x1b[" in _tmux(socket, "capture-pane", "-p", "-e"), "no colours on a terminal"
    finally:
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], capture_output=True, timeout=10)


# --- JSON output ----------------------------------------------------------------------


def test_json_output_is_one_object_per_line_with_stable_fields(
    cli: CliEnv, pipeline: Pipeline
) -> None:
    result = cli.run(
        "--output",
        "json",
        "tasks",
        "submit",
        "probe",
        "--steps",
        "3",
        "--step-millis",
        "10",
        "--wait",
    )
    assert result.returncode == 0, described(result)
    lines = json_lines(result.stdout)
    assert lines[0]["type"] == "task"
    submitted = lines[0]["task"]
    assert submitted["kind"] == "TASK_KIND_PROBE"
    assert submitted["probe"] == {"steps": 3, "step_millis": 10}
    events = [line["event"] for line in lines if line["type"] == "event"]
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    assert all(e["task_id"] == submitted["id"] for e in events)
    assert events[-1]["terminal"] is True
    assert lines[-1]["type"] == "task"
    final = lines[-1]["task"]
    assert final["state"] == "TASK_STATE_SUCCEEDED"
    assert final["probe_result"]["steps_completed"] == 3

    got = cli.run("tasks", "get", submitted["id"], "--output", "json")
    assert got.returncode == 0, described(got)
    assert json_lines(got.stdout) == [{"type": "task", "task": final}]

    listed = cli.run("--output", "json", "tasks", "list", "--kind", "probe", "--page-size", "1000")
    assert listed.returncode == 0, described(listed)
    assert submitted["id"] in {line["task"]["id"] for line in json_lines(listed.stdout)}

    name = f"json-{uuid.uuid4().hex[:8]}"
    created = cli.run("--output", "json", "projects", "create", "--name", name)
    assert created.returncode == 0, described(created)
    (project_line,) = json_lines(created.stdout)
    assert project_line["type"] == "project"
    assert project_line["project"]["name"] == name
    project_id = project_line["project"]["id"]
    updated = cli.run(
        "--output",
        "json",
        "projects",
        "update",
        project_id,
        "--description",
        "d2",
        "--etag",
        project_line["project"]["etag"],
    )
    assert updated.returncode == 0, described(updated)
    assert json_lines(updated.stdout)[0]["project"]["description"] == "d2"
    listed = cli.run("--output", "json", "projects", "list", "--page-size", "1000")
    assert project_id in {line["project"]["id"] for line in json_lines(listed.stdout)}
    deleted = cli.run("--output", "json", "projects", "delete", project_id)
    assert json_lines(deleted.stdout) == [{"type": "deleted", "id": project_id}]


# --- results per kind ----------------------------------------------------------------


def test_a_compliance_report_prints_per_process_status_and_saves_the_pdf(
    cli: CliEnv, pipeline: Pipeline, tmp_path: Path
) -> None:
    # The project has no documents: every process of the rule set misses work products.
    saved = tmp_path / "report.pdf"
    result = cli.run(
        "tasks",
        "submit",
        "compliance",
        "--project",
        pipeline.project_id,
        "--wait",
        "--save",
        str(saved),
        timeout=120,
    )
    assert result.returncode == 0, described(result)
    task_id = re.search(r"task ([0-9a-f-]{36})", result.stdout + result.stderr)
    assert task_id, described(result)
    task = pipeline.tasks.GetTask(pb.GetTaskRequest(id=task_id.group(1)), timeout=TIMEOUT).task
    report = task.compliance_report_result
    assert report.processes, task
    screen = " ".join(result.stdout.split())  # a table may wrap a cell over lines
    for process in report.processes:
        assert process.process_id in screen, (process.process_id, result.stdout)
        for product in process.missing_work_products[:1]:
            assert product in screen, (product, result.stdout)
    assert report.pdf_artifact_id in screen
    assert saved.read_bytes().startswith(b"%PDF-"), "--save wrote no PDF"


def test_admin_commands_with_a_token_file(cli: CliEnv, pipeline: Pipeline, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(cli.token + "\n")
    env = {k: v for k, v in cli.env().items() if k != "AGENTIC_TOKEN"}
    no_token = cli.run("--output", "json", "admin", "stats", env=env)
    assert no_token.returncode == 4, described(no_token)  # UNAUTHENTICATED without a token

    stats = cli.run("--token-file", str(token_file), "--output", "json", "admin", "stats", env=env)
    assert stats.returncode == 0, described(stats)
    (line,) = json_lines(stats.stdout)
    assert line["type"] == "task_stats"
    queues = {q["queue"]: q for q in line["task_stats"]["queues"]}
    work = queues[pipeline.stack.env["AGENTIC_TASK_QUEUE"]]
    assert work["reachable"] is True, line
    assert int(work["consumers"]) == 1, line  # the pipeline's one worker

    job = cli.run(
        "--token-file",
        str(token_file),
        "--output",
        "json",
        "admin",
        "jobs",
        "run",
        "health_probe",
        "--wait",
        env=env,
        timeout=60,
    )
    assert job.returncode == 0, described(job)
    final = json_lines(job.stdout)[-1]["task"]
    assert (final["kind"], final["state"]) == ("TASK_KIND_PROBE", "TASK_STATE_SUCCEEDED")
    got = pipeline.tasks.GetTask(pb.GetTaskRequest(id=final["id"]), timeout=TIMEOUT).task
    assert got.state == pb.TASK_STATE_SUCCEEDED


def test_profile_and_analytics_results_print_as_tables(
    cli: CliEnv, pipeline: Pipeline, tmp_path: Path
) -> None:
    csv = tmp_path / "issues.csv"
    csv.write_text(
        "id,status,effort_hours\n"
        + "".join(f"{i},{'open' if i % 3 else 'done'},{i * 1.5}\n" for i in range(1, 31))
    )
    uploaded = cli.run(
        "--output", "json", "artifacts", "upload", str(csv), "--project", pipeline.project_id
    )
    assert uploaded.returncode == 0, described(uploaded)
    dataset = json_lines(uploaded.stdout)[0]["artifact"]
    assert (dataset["kind"], dataset["format"]) == ("ARTIFACT_KIND_DATASET", "DATASET_FORMAT_CSV")

    report = tmp_path / "profile.html"
    profile = cli.run(
        "tasks",
        "submit",
        "profile",
        "--project",
        pipeline.project_id,
        "--dataset",
        dataset["id"],
        "--top-k",
        "2",
        "--wait",
        "--save",
        str(report),
    )
    assert profile.returncode == 0, described(profile)
    assert "dataset: 30 rows" in profile.stdout, described(profile)
    for heading in ("column id (INTEGER)", "column status (STRING)", "column effort_hours (FLOAT)"):
        assert heading in profile.stdout, described(profile)
    assert re.search(r"top values\s*│ open \(20\), done \(10\)", profile.stdout), profile.stdout
    assert report.read_text().lstrip().lower().startswith("<!doctype html"), "not the HTML report"

    analytics = cli.run(
        "tasks",
        "submit",
        "analytics",
        "--project",
        pipeline.project_id,
        "--dataset",
        dataset["id"],
        "--group-by",
        "status",
        "--measure",
        "count",
        "--measure",
        "sum:effort_hours=effort",
        "--filter",
        "id<=30",
        "--order-by",
        "status",
        "--wait",
    )
    assert analytics.returncode == 0, described(analytics)
    # Table rows: cells between box-drawing bars (┃ in the header, │ in the body).
    rows = [re.split("[│┃]", line)[1:-1] for line in analytics.stdout.splitlines()]
    cells = [[cell.strip() for cell in row] for row in rows]
    assert ["status", "count", "effort"] in cells, analytics.stdout
    assert ["done", "10", "247.5"] in cells, analytics.stdout
    assert ["open", "20", "450"] in cells, analytics.stdout


# --- exit codes -----------------------------------------------------------------------


def _first_task_id(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()  # the CLI prints the task once it is submitted
    assert line, (
        f"the CLI printed nothing; stderr:\n{process.stderr.read() if process.stderr else ''}"
    )
    task_id = json_lines(line)[0]["task"]["id"]
    assert isinstance(task_id, str)
    return task_id


def test_a_failing_probe_exits_1_with_its_error(cli: CliEnv) -> None:
    result = cli.run(
        "tasks",
        "submit",
        "probe",
        "--steps",
        "3",
        "--step-millis",
        "10",
        "--fail-at-step",
        "2",
        "--wait",
    )
    assert result.returncode == 1, described(result)
    assert "FAILED" in result.stdout, described(result)
    # ... and none in a pipe.
    assert "\x1b[" not in result.stdout + result.stderr, described(result)


def test_a_cancelled_probe_exits_2(cli: CliEnv, pipeline: Pipeline) -> None:
    process = cli.popen(
        "--output",
        "json",
        "tasks",
        "submit",
        "probe",
        "--steps",
        "100",
        "--step-millis",
        "100",
        "--wait",
    )
    try:
        task_id = _first_task_id(process)
        wait_state(pipeline.tasks, task_id, {pb.TASK_STATE_RUNNING})
        pipeline.tasks.CancelTask(pb.CancelTaskRequest(id=task_id), timeout=TIMEOUT)
        assert process.wait(timeout=20) == 2, process.stderr.read() if process.stderr else ""
    finally:
        process.kill()
        process.communicate(timeout=10)


def test_tasks_cancel_and_retry_with_wait_end_as_their_tasks_do(
    cli: CliEnv, pipeline: Pipeline
) -> None:
    # cancel --wait: a long probe, cancelled by the CLI, is watched to CANCELLED (exit 2).
    long = pipeline.tasks.SubmitProbe(
        pb.SubmitProbeRequest(
            request_id=str(uuid.uuid4()), probe=pb.ProbeSpec(steps=100, step_millis=100)
        ),
        timeout=TIMEOUT,
    ).task
    wait_state(pipeline.tasks, long.id, {pb.TASK_STATE_RUNNING})
    cancelled = cli.run("--output", "json", "tasks", "cancel", long.id, "--wait")
    assert cancelled.returncode == 2, described(cancelled)
    lines = json_lines(cancelled.stdout)
    assert lines[-1]["task"]["state"] == "TASK_STATE_CANCELLED", lines[-1]
    got = pipeline.tasks.GetTask(pb.GetTaskRequest(id=long.id), timeout=TIMEOUT).task
    assert got.state == pb.TASK_STATE_CANCELLED

    # retry --wait: a probe that failed runs again as attempt 2, fails again (exit 1), and
    # the watch ends on that attempt's end, not on the first attempt's terminal event.
    failing = pipeline.tasks.SubmitProbe(
        pb.SubmitProbeRequest(
            request_id=str(uuid.uuid4()),
            probe=pb.ProbeSpec(steps=2, step_millis=10, fail_at_step=1),
        ),
        timeout=TIMEOUT,
    ).task
    wait_state(pipeline.tasks, failing.id, {pb.TASK_STATE_FAILED})
    retried = cli.run("--output", "json", "tasks", "retry", failing.id, "--wait")
    assert retried.returncode == 1, described(retried)
    final = json_lines(retried.stdout)[-1]["task"]
    assert final["state"] == "TASK_STATE_FAILED", final
    assert int(final["attempt"]) == 2, final
    after = pipeline.tasks.GetTask(pb.GetTaskRequest(id=failing.id), timeout=TIMEOUT).task
    assert (after.state, after.attempt) == (pb.TASK_STATE_FAILED, 2)


def test_timeout_exits_3_and_the_task_keeps_running(cli: CliEnv, pipeline: Pipeline) -> None:
    started = time.monotonic()
    result = cli.run(
        "--output",
        "json",
        "tasks",
        "submit",
        "probe",
        "--steps",
        "100",
        "--step-millis",
        "100",
        "--wait",
        "--timeout",
        "1",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 3, described(result)
    lines = json_lines(result.stdout)
    task_id = lines[0]["task"]["id"]
    assert lines[-1] == {"type": "timeout", "task_id": task_id, "timeout_seconds": 1.0}
    assert elapsed < 8, f"--timeout 1 took {elapsed:.1f} s"
    task = pipeline.tasks.GetTask(pb.GetTaskRequest(id=task_id), timeout=TIMEOUT).task
    assert task.state in {pb.TASK_STATE_PENDING, pb.TASK_STATE_RUNNING}
    # Free the worker for the next tests.
    pipeline.tasks.CancelTask(pb.CancelTaskRequest(id=task_id), timeout=TIMEOUT)


@pytest.mark.parametrize(
    ("flags", "what"),
    [
        (["--address", "unused-port"], "nothing listens"),
        (["--token", "not-a-jwt"], "UNAUTHENTICATED"),
    ],
)
def test_an_unreachable_or_refusing_server_exits_4(
    cli: CliEnv, flags: list[str], what: str
) -> None:
    flags = [f"127.0.0.1:{free_port()}" if f == "unused-port" else f for f in flags]
    result = cli.run(*flags, "tasks", "submit", "probe", "--steps", "1")
    assert result.returncode == 4, f"{what}: {described(result)}"
    assert "error: " in result.stderr


def test_a_stopped_server_exits_4(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.stack.start_server()  # a second server of the stack, then stopped
    service = pipeline.stack.servers[-1]
    assert service.stop() == 0
    env = CliEnv(address=service.address, token="t", cache_dir=tmp_path)
    result = env.run("tasks", "list")
    assert result.returncode == 4, described(result)
    assert "UNAVAILABLE" in result.stderr


def test_tls_and_mtls_flags(cli: CliEnv, pipeline: Pipeline, tmp_path: Path) -> None:
    pki = ensure_dev_ca(tmp_path / "pki")
    pipeline.stack.start_server(
        AGENTIC_TLS_CERT_FILE=str(pki.server_cert),
        AGENTIC_TLS_KEY_FILE=str(pki.server_key),
        AGENTIC_TLS_CLIENT_CA_FILE=str(pki.ca_cert),
    )
    address = ["--address", pipeline.stack.servers[-1].address]
    mtls = [
        "--ca-file",
        str(pki.ca_cert),
        "--cert-file",
        str(pki.client_cert),
        "--key-file",
        str(pki.client_key),
    ]
    ok = cli.run(*address, *mtls, "--output", "json", "rulesets", "get", "aspice-3.1")
    assert ok.returncode == 0, described(ok)
    assert json_lines(ok.stdout)[0]["rule_set"]["id"] == "aspice-3.1"
    # No client certificate, or no TLS at all: the server refuses the connection.
    for flags in (mtls[:2], []):
        refused = cli.run(*address, *flags, "rulesets", "list")
        assert refused.returncode == 4, f"{flags}: {described(refused)}"
    lonely = cli.run(*address, "--cert-file", str(pki.client_cert), "rulesets", "list")
    assert lonely.returncode == 64, described(lonely)


@pytest.mark.parametrize(
    "args",
    [
        ["tasks", "submit", "probe", "--stepz", "3"],
        ["tasks", "submit", "probe", "--steps", "three"],
        ["tasks", "frobnicate"],
        [],
    ],
)
def test_bad_usage_exits_64(cli: CliEnv, args: list[str]) -> None:
    result = cli.run(*args)
    assert result.returncode == 64, described(result)
    assert "usage: agentic" in result.stderr


def test_field_violations_are_printed_one_per_line(cli: CliEnv) -> None:
    result = cli.run("tasks", "submit", "probe", "--steps", "0")
    assert result.returncode == 1, described(result)
    assert "error: INVALID_ARGUMENT" in result.stderr, described(result)
    assert re.search(r"^\s+probe\.steps: ", result.stderr, re.MULTILINE), described(result)
    as_json = cli.run("--output", "json", "tasks", "submit", "probe", "--steps", "0")
    (error,) = json_lines(as_json.stderr)
    assert error["code"] == "INVALID_ARGUMENT"
    assert "probe.steps" in {v["field"] for v in error["field_violations"]}
    assert as_json.stdout == ""


# --- watch reconnects ------------------------------------------------------------------


def test_watch_reconnects_from_the_last_sequence_when_the_server_dies(
    cli: CliEnv, pipeline: Pipeline
) -> None:
    port = free_port()
    pipeline.stack.start_server(AGENTIC_LISTEN_ADDRESS=f"127.0.0.1:{port}")
    doomed = pipeline.stack.servers.pop()  # killed below: not the stack's to stop
    task = pipeline.tasks.SubmitProbe(
        pb.SubmitProbeRequest(
            request_id=str(uuid.uuid4()), probe=pb.ProbeSpec(steps=30, step_millis=100)
        ),
        timeout=TIMEOUT,
    ).task
    process = cli.popen(
        "--output", "json", "--address", f"127.0.0.1:{port}", "tasks", "watch", task.id
    )
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in process.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    stderr = ""
    try:
        seen: list[str] = []

        def two_events() -> bool:
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get_nowait())
            return sum('"type": "event"' in line for line in seen) >= 2

        wait_for(two_events, timeout=20, message="the CLI to print two events")
        doomed.stop(signal.SIGKILL)
        pipeline.stack.start_server(AGENTIC_LISTEN_ADDRESS=f"127.0.0.1:{port}")
        code = process.wait(timeout=40)
        stderr = process.stderr.read() if process.stderr else ""
        assert code == 0, stderr
    finally:
        process.kill()
        process.wait(10)
        reader.join(10)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    while not lines.empty():
        seen.append(lines.get_nowait())
    parsed = json_lines("".join(seen))
    sequences = [int(line["event"]["sequence"]) for line in parsed if line["type"] == "event"]
    # Every event exactly once, in order, across the break.
    assert sequences == list(range(1, sequences[-1] + 1)), sequences
    assert parsed[-1]["task"]["state"] == "TASK_STATE_SUCCEEDED"
    assert "reconnecting from sequence" in stderr, stderr


# --- upload resume --------------------------------------------------------------------

SIZE = 200 * 1024 * 1024


def _big_file(path: Path) -> str:
    """SIZE bytes of random data, written in 4 MiB pieces; its sha256."""
    digest = hashlib.sha256()
    piece = 4 * 1024 * 1024
    with path.open("wb") as out:
        for _ in range(SIZE // piece):
            data = os.urandom(piece)
            out.write(data)
            digest.update(data)
    return digest.hexdigest()


def _uploaded_bytes(pipeline: Pipeline) -> float:
    return metric(metrics_text(pipeline.metrics_port), "agentic_artifact_uploaded_bytes_total")


@pytest.mark.parametrize(
    ("stop", "exit_code"),
    [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130)],
    ids=["kill-9", "ctrl-c"],
)
def test_an_upload_killed_half_way_resumes_from_the_committed_size(
    cli: CliEnv, pipeline: Pipeline, tmp_path: Path, stop: signal.Signals, exit_code: int
) -> None:
    source = tmp_path / "big.bin"
    sha256 = _big_file(source)
    kill_at = random.randint(SIZE // 5, SIZE * 3 // 5)
    process = cli.popen(
        "--output",
        "json",
        "artifacts",
        "upload",
        str(source),
        "--project",
        pipeline.project_id,
        # Loopback takes 200 MiB in about a second: slow it enough to stop it part-way.
        "--limit-rate",
        "80M",
        stdout=subprocess.DEVNULL,
    )
    try:
        states = cli.cache_dir / "agentic" / "uploads"
        wait_for(
            lambda: any(states.glob("*.json")),
            timeout=20,
            message=f"the CLI to record its upload in {states}",
        )
        upload_name = json_lines(next(states.glob("*.json")).read_text())[0]["upload_name"]

        def committed_past_kill_point() -> bool:
            assert process.poll() is None, "the upload ended before it could be killed"
            status = pipeline.artifacts.QueryWriteStatus(
                apb.QueryWriteStatusRequest(resource_name=upload_name), timeout=TIMEOUT
            )
            return bool(status.committed_size >= kill_at)

        wait_for(
            committed_past_kill_point,
            timeout=60,
            message=f"the server to commit {kill_at} bytes of {upload_name}",
        )
        process.send_signal(stop)  # a crash, or the user's Ctrl-C
        assert process.wait(10) == exit_code
    finally:
        process.kill()
        process.communicate(timeout=10)

    committed = pipeline.artifacts.QueryWriteStatus(
        apb.QueryWriteStatusRequest(resource_name=upload_name), timeout=TIMEOUT
    )
    assert kill_at <= committed.committed_size < SIZE
    assert not committed.complete
    before = _uploaded_bytes(pipeline)

    resumed = cli.run(
        "--output",
        "json",
        "artifacts",
        "upload",
        str(source),
        "--project",
        pipeline.project_id,
        "--resume",
        timeout=120,
    )
    assert resumed.returncode == 0, described(resumed)
    (line,) = json_lines(resumed.stdout)
    assert line["type"] == "artifact"
    assert line["resumed_from"] == committed.committed_size
    artifact = line["artifact"]
    assert artifact["state"] == "ARTIFACT_STATE_READY"
    assert artifact["sha256"] == sha256
    assert int(artifact["size_bytes"]) == SIZE
    # Only the rest was sent: the server received exactly the bytes past the committed size.
    assert _uploaded_bytes(pipeline) - before == SIZE - committed.committed_size
    assert not any((cli.cache_dir / "agentic" / "uploads").glob("*.json")), "state file kept"

    # A download that stopped part-way resumes from the file's size and checks the sha256.
    target = tmp_path / "back.bin"
    with source.open("rb") as f, target.open("wb") as out:
        out.write(f.read(SIZE - 7 * 1024 * 1024 - 3))
    downloaded = cli.run(
        "--output", "json", "artifacts", "download", artifact["id"], "-o", str(target), timeout=120
    )
    assert downloaded.returncode == 0, described(downloaded)
    assert "resuming" in downloaded.stderr
    assert json_lines(downloaded.stdout)[-1]["sha256"] == sha256
    assert target.stat().st_size == SIZE
    target.unlink()

    listed = cli.run("--output", "json", "artifacts", "list", "--project", pipeline.project_id)
    assert artifact["id"] in {x["artifact"]["id"] for x in json_lines(listed.stdout)}
