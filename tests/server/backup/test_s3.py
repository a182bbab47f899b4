"""Backups of a deployment on an S3 object store: the manifest lists the ready artifacts'
keys, sizes and checksums without copying them, and verify and restore name the listed
objects the bucket no longer holds (to bring back from bucket versioning)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from agentic.artifacts.v1 import artifacts_pb2_grpc
from agentic.projects.v1 import projects_pb2 as pj_pb
from agentic.projects.v1 import projects_pb2_grpc

from devtools.s3 import S3Server
from tests._identity import SERVICE_ACCOUNT_LIMITS, authorized_channel
from tests._processes import run_module, start_service
from tests.server.artifacts._bytestream import upload

PREFIX = "objects"


def run_backup(*args: str, environ: dict[str, str]) -> dict[str, Any]:
    done = run_module("server.backup", *args, env=environ, timeout=60)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def test_an_s3_store_is_listed_not_copied(tmp_path: Path) -> None:
    with S3Server(log_path=tmp_path / "moto.log") as s3:
        bucket = f"backup-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(bucket)
        url = f"sqlite:///{tmp_path / 'a.db'}"
        store = {**s3.env(), "AGENTIC_OBJECT_STORE_URL": f"s3://{bucket}/{PREFIX}"}
        service = start_service(
            "server",
            {
                "AGENTIC_LISTEN_ADDRESS": "127.0.0.1:0",
                "AGENTIC_METRICS_ADDRESS": "",
                "AGENTIC_CACHE_ADDRESS": "",
                "DATABASE_URL": url,
                "AGENTIC_SHUTDOWN_GRACE_SECONDS": "2",
                **SERVICE_ACCOUNT_LIMITS,
                **store,
            },
            tmp_path / "server",
        )
        try:
            channel = authorized_channel(service.address)
            project = (
                projects_pb2_grpc.ProjectServiceStub(channel)
                .CreateProject(
                    pj_pb.CreateProjectRequest(project=pj_pb.Project(name="s3", owner_id="alice")),
                    timeout=10,
                )
                .project
            )
            stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
            uploaded = {}
            for i in range(2):
                source = tmp_path / f"{i}.csv"
                source.write_text("a,b\n" + f"{i},{os.urandom(8).hex()}\n" * 100)
                artifact = upload(stub, project.id, source)
                uploaded[artifact.id] = artifact
            channel.close()
        finally:
            assert service.stop() == 0, service.log()

        environ = {
            **os.environ,
            **store,
            "DATABASE_URL": url,
            "AGENTIC_BACKUP_DIR": str(tmp_path / "b"),
        }
        created = run_backup("create", environ=environ)["created"]
        assert created["object_store"] == "s3"
        manifest = json.loads((Path(created["path"]) / "manifest.json").read_text())
        assert not any(f["path"].startswith("objects/") for f in manifest["files"])
        listed = {o["path"]: (o["size_bytes"], o["sha256"]) for o in manifest["remote_objects"]}
        assert sorted(listed.values()) == sorted(
            (a.size_bytes, a.sha256) for a in uploaded.values()
        )

        # An object deleted after the backup: the backup is still whole, but says what is gone.
        gone = sorted(listed)[0]
        s3.client().delete_object(Bucket=bucket, Key=f"{PREFIX}/{gone}")
        checked = run_backup("verify", environ=environ)
        assert checked["ok"]
        assert checked["missing_remote_objects"] == [gone]
        restored = run_backup(
            "restore", environ={**environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"}
        )["restored"]
        assert restored["objects_restored"] == 0
        assert restored["missing_remote_objects"] == [gone]
