"""The recovery drill, on SQLite and on PostgreSQL: back up a live stack, lose everything,
restore, and find every row and every object as it was.

A real API server and worker (tests/workers/_stack.py) hold projects, a custom rule set,
uploaded artifacts and tasks (finished probes, and one probe still running); the backup
is taken while they run. Then the worker is killed, the server stopped, the database
dropped and the objects directory deleted. ``python -m server.backup restore`` brings
them back into a fresh database; every table is compared row by row with a reference read
just before the backup, every object by sha256. A new stack on the restored data (a new
queue, as after a lost broker) then recovers the task that was running at backup time
(its claim lapsed, the reaper re-queues it) to an end, and a Submit that repeats a
request_id from before the backup returns the task it made then.

The restore's wall time (the RTO figure for this data set) is printed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.compliance.v1 import rule_sets_pb2 as rs_pb
from agentic.compliance.v1 import rule_sets_pb2_grpc
from agentic.projects.v1 import projects_pb2 as pj_pb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import tasks_pb2 as pb
from sqlalchemy import Engine, MetaData, select

from core.db import make_engine
from tests._processes import run_module
from tests._support import postgres_database
from tests.server.artifacts._bytestream import download, upload
from tests.workers._stack import (
    TIMEOUT,
    event_counts,
    get,
    private_vhost,
    stack,
    submit,
    wait_state,
)

TERMINAL: set[int] = {pb.TASK_STATE_SUCCEEDED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED}
# The running probe: one long step, so it is RUNNING with no new events for the whole
# backup; after the restore it runs again from the start.
LONG_STEP_MILLIS = 8000

Row = dict[str, Any]
Snapshot = dict[str, dict[tuple[Any, ...], Row]]


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    with private_vhost() as url:
        yield url


def snapshot(engine: Engine) -> Snapshot:
    """Every row of every table (as the database has them), by primary key."""
    tables = MetaData()
    tables.reflect(engine)
    out: Snapshot = {}
    with engine.connect() as conn:
        for table in tables.sorted_tables:
            key = [c.name for c in table.primary_key.columns] or [c.name for c in table.columns]
            rows = conn.execute(select(table)).mappings().all()
            out[table.name] = {tuple(row[k] for k in key): dict(row) for row in rows}
    return out


def objects_of(root: Path) -> dict[str, str]:
    """key -> sha256 of every object of a file store (staging aside)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and ".staging" not in p.relative_to(root).parts
    }


def changed_cells(a: Snapshot, b: Snapshot) -> set[tuple[str, tuple[Any, ...], str]]:
    """(table, key, column) of every cell that differs; a missing row counts as every cell."""
    cells = set()
    for table in a.keys() | b.keys():
        rows_a, rows_b = a.get(table, {}), b.get(table, {})
        for key in rows_a.keys() | rows_b.keys():
            row_a, row_b = rows_a.get(key, {}), rows_b.get(key, {})
            for column in row_a.keys() | row_b.keys():
                if row_a.get(column, "<none>") != row_b.get(column, "<none>"):
                    cells.add((table, key, column))
    return cells


@dataclass
class DataSet:
    """What the drill made before the backup."""

    finished: dict[str, pb.Task]  # request_id -> finished task
    running: pb.Task
    running_request: pb.SubmitProbeRequest
    artifacts: dict[str, str]  # artifact id -> sha256
    project_ids: list[str]


def make_data(channel: Any, tasks: Any, workdir: Path) -> DataSet:
    projects = projects_pb2_grpc.ProjectServiceStub(channel)
    project_ids = [
        projects.CreateProject(
            pj_pb.CreateProjectRequest(
                project=pj_pb.Project(name=f"drill-{i}", owner_id="alice", description=f"#{i}")
            ),
            timeout=TIMEOUT,
        ).project.id
        for i in range(3)
    ]
    rule_sets = rule_sets_pb2_grpc.RuleSetServiceStub(channel)
    rule_sets.CreateRuleSet(
        rs_pb.CreateRuleSetRequest(
            rule_set=rs_pb.RuleSet(
                name="drill rules",
                description="a custom set",
                source="team handbook",
                processes=[
                    rs_pb.Process(
                        id="SWE.1",
                        name="Software requirements analysis",
                        work_products=[rs_pb.WorkProduct(id="17-11", name="Requirements")],
                        checks=[rs_pb.CHECK_REQUIREMENT_HAS_TEST],
                    )
                ],
            )
        ),
        timeout=TIMEOUT,
    )
    artifacts_stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
    artifacts: dict[str, str] = {}
    for i, size in enumerate((1_000, 300_000, 2_500_000)):
        source = workdir / f"upload-{i}.csv"
        lines = size // 16
        source.write_text(
            "id,value\n" + "".join(f"{n},{os.urandom(4).hex()}\n" for n in range(lines))
        )
        artifact = upload(artifacts_stub, project_ids[i % 3], source, name=f"data-{i}.csv")
        artifacts[artifact.id] = artifact.sha256
    finished: dict[str, pb.Task] = {}
    for fail in (0, 0, 2):
        request_id = str(uuid.uuid4())
        task = submit(tasks, steps=2, step_millis=5, fail_at_step=fail, request_id=request_id)
        finished[request_id] = wait_state(tasks, task.id, TERMINAL)
    running_request = pb.SubmitProbeRequest(
        request_id=str(uuid.uuid4()),
        owner_id="alice",
        probe=pb.ProbeSpec(steps=1, step_millis=LONG_STEP_MILLIS),
    )
    running = tasks.SubmitProbe(running_request, timeout=TIMEOUT).task
    wait_state(tasks, running.id, {pb.TASK_STATE_RUNNING})
    return DataSet(finished, running, running_request, artifacts, project_ids)


def backup_env(url: str, objects: Path, backups: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "AGENTIC_OBJECT_STORE_URL": objects.as_uri(),
        "AGENTIC_BACKUP_DIR": str(backups),
    }


def run_backup(*args: str, environ: dict[str, str]) -> dict[str, Any]:
    done = run_module("server.backup", *args, env=environ, timeout=120)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    out: dict[str, Any] = json.loads(done.stdout)
    return out


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_recovery_drill(backend: str, broker_url: str, tmp_path: Path) -> None:
    objects, backups = tmp_path / "objects", tmp_path / "backups"
    with ExitStack() as resources:
        if backend == "sqlite":
            original = f"sqlite:///{tmp_path / 'original.db'}"
            restored_url = f"sqlite:///{tmp_path / 'restored.db'}"
        else:
            original = resources.enter_context(postgres_database(tmp_path / "pg-original"))
            restored_url = resources.enter_context(postgres_database(tmp_path / "pg-restored"))
        environ = backup_env(original, objects, backups)

        # --- a live stack with its data; the backup while the long probe runs ----------
        with stack(tmp_path, broker_url, original, AGENTIC_OBJECT_STORE_URL=objects.as_uri()) as s:
            tasks = s.start_server()
            s.start_worker()
            data = make_data(s.channels[-1], tasks, tmp_path)
            before = snapshot(s.db())
            created = run_backup("create", environ=environ)["created"]
            after = snapshot(s.db())
            reference_objects = objects_of(objects)
            # The worker dies with the disaster: kill -9, so nothing finishes the probe.
            for worker in s.workers:
                worker.kill()
            assert get(tasks, data.running.id).state == pb.TASK_STATE_RUNNING

        # While the backup ran only the running probe's claim was renewed (its worker's
        # heartbeat); every other cell was still.
        volatile = changed_cells(before, after)
        assert volatile <= {("tasks", (data.running.id,), "claim_expire_time")}, volatile
        assert created["objects"] == len(reference_objects) >= len(data.artifacts)

        # --- the disaster: the database and the objects are gone -----------------------
        if backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(tmp_path / f"original.db{suffix}").unlink(missing_ok=True)
            restored_url = original  # the same file name, as an operator would restore it
        shutil.rmtree(objects)

        # --- the restore (timed: the RTO of this data set) ----------------------------
        started = time.monotonic()
        restored = run_backup("restore", environ=backup_env(restored_url, objects, backups))
        rto = time.monotonic() - started
        db_bytes = next(
            f
            for f in json.loads((Path(created["path"]) / "manifest.json").read_text())["files"]
            if f["path"].startswith("database.")
        )["size_bytes"]
        inside = restored["restored"]["seconds"]
        print(
            f"\nRTO {backend}: restore took {rto:.2f} s wall ({inside:.2f} s in the command)"
            f" for {sum(len(t) for t in before.values())} rows, a "
            f"{db_bytes} B dump and {len(reference_objects)} objects "
            f"({created['size_bytes']} B in all)"
        )

        # --- compare: every row of every table, every object ----------------------------
        engine = make_engine(restored_url, pool_size=1)
        try:
            back = snapshot(engine)
        finally:
            engine.dispose()
        assert back.keys() == before.keys()
        for table in before:
            assert back[table].keys() == before[table].keys(), f"rows of {table} differ"
        differing = changed_cells(before, back)
        assert differing <= volatile, f"restored cells that differ: {sorted(differing)[:10]}"
        for table, key, column in differing:
            value = back[table][key][column]
            assert before[table][key][column] <= value <= after[table][key][column]
        assert objects_of(objects) == reference_objects

        # --- a new stack on the restored data (a new queue: the broker is new too) ----------
        with stack(
            tmp_path, broker_url, restored_url, AGENTIC_OBJECT_STORE_URL=objects.as_uri()
        ) as s:
            tasks = s.start_server(AGENTIC_TASK_REAP_AFTER_SECONDS="1")
            s.start_worker()
            # The running task is recovered (re-queued by the reaper) and ends.
            ended = wait_state(
                tasks, data.running.id, TERMINAL, timeout=LONG_STEP_MILLIS / 1000 + 30
            )
            assert ended.state == pb.TASK_STATE_SUCCEEDED or ended.error.message, ended
            print(f"the task running at backup time ended {pb.TaskState.Name(ended.state)}")
            assert event_counts(s.db())[data.running.id][0] > event_counts_of(
                before, data.running.id
            )
            # A Submit with a request_id from before the backup returns the same task.
            for request_id, task in data.finished.items():
                again = submit(
                    tasks,
                    steps=2,
                    step_millis=5,
                    fail_at_step=2 if task.state == pb.TASK_STATE_FAILED else 0,
                    request_id=request_id,
                )
                assert again.id == task.id
                assert again.state == task.state
            assert (
                tasks.SubmitProbe(data.running_request, timeout=TIMEOUT).task.id == data.running.id
            )
            # The restored bytes serve reads through the API, checksums equal.
            artifacts_stub = artifacts_pb2_grpc.ArtifactServiceStub(s.channels[-1])
            for artifact_id, digest in data.artifacts.items():
                body = io.BytesIO()
                download(artifacts_stub, artifact_id, body)
                assert hashlib.sha256(body.getvalue()).hexdigest() == digest


def event_counts_of(snap: Snapshot, task_id: str) -> int:
    return sum(1 for key in snap["task_events"] if key[0] == task_id)
