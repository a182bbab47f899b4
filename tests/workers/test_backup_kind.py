"""The backup kind end to end: SubmitBackup over gRPC, a real worker process writes and
verifies the backup, prunes after it verified, and ListBackups on the API server reads it.

The task's result is compared with what lies on disk, recomputed here: every file's size
and sha256 against the manifest and the result's totals, the copied object against the
uploaded bytes, the revision against the database's ``alembic_version``. Both SQLite and
PostgreSQL (``pg_dump -Fc``), since the dump is the database's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from agentic.admin.v1 import admin_pb2, admin_pb2_grpc
from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as ppb
from agentic.projects.v1 import projects_pb2_grpc
from agentic.tasks.v1 import maintenance_pb2, tasks_pb2_grpc
from agentic.tasks.v1 import tasks_pb2 as pb
from google.rpc import error_details_pb2
from sqlalchemy import text

from core.objects import object_key
from tests._identity import authorized_channel
from tests._status import rich_status
from tests.server.artifacts._bytestream import upload
from tests.workers._stack import TIMEOUT, Stack, private_vhost, stack, watch_to_end

SKIP = {"manifest.json", "verified.json"}


@pytest.fixture
def pipeline(tmp_path: Path, private_database_url: str) -> Iterator[Stack]:
    """A server and a worker sharing a database, a file store and a backup directory; the
    worker keeps one backup (prune deletes every older one once the new one verified)."""
    with (
        private_vhost() as broker,
        stack(
            tmp_path,
            broker,
            private_database_url,
            AGENTIC_BACKUP_DIR=str(tmp_path / "backups"),
            AGENTIC_BACKUP_KEEP_LAST="1",
            AGENTIC_BACKUP_KEEP_DAYS="0",
            AGENTIC_APP_VERSION="test-1.2.3",
        ) as s,
    ):
        s.start_server()
        s.start_worker(concurrency=1)
        yield s


def _run_backup(tasks: tasks_pb2_grpc.TaskServiceStub) -> tuple[pb.Task, list[str]]:
    """Submit a backup and follow it to its end: the final task and the progress messages."""
    request = pb.SubmitBackupRequest(
        request_id=str(uuid.uuid4()), backup=maintenance_pb2.BackupSpec(prune=True)
    )
    task = tasks.SubmitBackup(request, timeout=TIMEOUT).task
    events = watch_to_end(tasks, task.id, timeout=120)
    messages = [e.progress.message for e in events if e.HasField("progress")]
    return events[-1].task, messages


def _on_disk(path: Path) -> dict[str, tuple[int, str]]:
    """(size, sha256) of every file of a backup directory but its manifest and marker."""
    return {
        p.relative_to(path).as_posix(): (
            p.stat().st_size,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in SKIP
    }


def test_a_backup_task_writes_a_verified_backup_and_prunes_after_it(
    pipeline: Stack, tmp_path: Path
) -> None:
    address = pipeline.servers[0].address
    channel = authorized_channel(address)
    tasks = tasks_pb2_grpc.TaskServiceStub(channel)
    project = projects_pb2_grpc.ProjectServiceStub(channel).CreateProject(
        ppb.CreateProjectRequest(project=ppb.Project(name="backed-up")), timeout=TIMEOUT
    )
    source = tmp_path / "data.csv"
    source.write_bytes(b"a,b\n" + os.urandom(20_000).hex().encode())
    artifact = upload(artifacts_pb2_grpc.ArtifactServiceStub(channel), project.project.id, source)

    first, messages = _run_backup(tasks)
    assert first.state == pb.TASK_STATE_SUCCEEDED, first
    result = first.backup_result
    # One progress report per phase, in order (per file for an S3 upload).
    phases = ["dumping", "copying", "writing", "verifying", "pruning"]
    seen = [next(i for i, m in enumerate(messages) if m.startswith(p)) for p in phases]
    assert seen == sorted(seen), messages

    path = Path(result.location)
    assert path == tmp_path / "backups" / result.backup_id
    manifest = json.loads((path / "manifest.json").read_text())
    on_disk = _on_disk(path)
    listed = {f["path"]: (f["size_bytes"], f["sha256"]) for f in manifest["files"]}
    assert listed == on_disk
    assert result.files == len(on_disk)
    assert result.bytes == sum(size for size, _ in on_disk.values())
    assert result.verified
    assert (path / "verified.json").is_file()
    assert result.app_version == manifest["app_version"] == "test-1.2.3"
    assert result.create_time.ToDatetime().isoformat() == manifest["create_time"][:26]
    with pipeline.db().connect() as conn:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert result.alembic_revision == manifest["database"]["alembic_revision"] == revision
    # The uploaded artifact's bytes are in the backup, unchanged.
    key = object_key(project.project.id, artifact.id)
    wanted = (source.stat().st_size, hashlib.sha256(source.read_bytes()).hexdigest())
    assert on_disk[f"objects/{key}"] == wanted
    assert list(result.pruned_backup_ids) == []

    # A second run prunes the first (keep 1), but only after the new one verified.
    second, _ = _run_backup(tasks)
    assert second.state == pb.TASK_STATE_SUCCEEDED, second
    assert list(second.backup_result.pruned_backup_ids) == [result.backup_id]
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == [
        second.backup_result.backup_id
    ]

    listed_backups = admin_pb2_grpc.AdminServiceStub(channel).ListBackups(
        admin_pb2.ListBackupsRequest(), timeout=TIMEOUT
    )
    assert listed_backups.destination == str(tmp_path / "backups")
    assert [b.id for b in listed_backups.backups] == [second.backup_result.backup_id]
    only = listed_backups.backups[0]
    assert only.verified
    assert only.HasField("verify_time")
    assert only.verify_time.ToDatetime() >= only.create_time.ToDatetime()
    assert (only.files, only.bytes) == (
        second.backup_result.files,
        second.backup_result.bytes,
    )
    assert only.database == manifest["database"]["backend"]
    assert only.database == (
        "sqlite" if pipeline.database_url.startswith("sqlite") else "postgresql"
    )
    channel.close()


def test_without_a_destination_list_backups_and_the_kind_refuse(tmp_path: Path) -> None:
    """AGENTIC_BACKUP_DIR set empty and no URL: ListBackups is FAILED_PRECONDITION, and a
    backup task fails at once (no retry) with NO_BACKUP_DESTINATION."""
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    with private_vhost() as broker, stack(tmp_path, broker, url, AGENTIC_BACKUP_DIR="") as s:
        tasks = s.start_server()
        s.start_worker(concurrency=1)
        channel = authorized_channel(s.servers[0].address)
        with pytest.raises(grpc.RpcError) as caught:
            admin_pb2_grpc.AdminServiceStub(channel).ListBackups(
                admin_pb2.ListBackupsRequest(), timeout=TIMEOUT
            )
        channel.close()
        final, _ = _run_backup(tasks)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rich_status(caught.value).reason == "NO_BACKUP_DESTINATION"
    assert final.state == pb.TASK_STATE_FAILED, final
    info = error_details_pb2.ErrorInfo()
    assert final.error.details[0].Unpack(info)
    assert info.reason == "NO_BACKUP_DESTINATION"
    assert final.attempt == 1, "a missing destination is not retried"
