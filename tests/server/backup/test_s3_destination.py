"""Backups kept under an S3 prefix (``AGENTIC_BACKUP_URL``) on moto's S3 server, through
``python -m server.backup`` as an operator runs it, on SQLite and PostgreSQL: create, list,
verify, restore into an empty database; a damaged object fails verify and is refused by
restore with the target untouched; an upload that fails half-way leaves nothing listed;
prune deletes every object of the backups it lets go.

What S3 holds is recomputed here from the bucket (each object's sha256) and from the
source (the object store's files), independently of the manifest the command wrote.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.exceptions import S3UploadFailedError

from core.backup import BackupConfig, BackupError, StoredBackup, create, open_destination
from core.backup._s3 import S3Destination
from core.objects import open_store
from devtools.s3 import S3Server
from tests.server.backup.test_command import (
    EXIT_FAILED,
    add_project,
    backup_cli,
    env,
    project_names,
    put_objects,
    tree,
)

PREFIX = "deploy/backups"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"backups-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(name)
    return name


def s3_env(s3: S3Server, bucket: str, url: str, workdir: Path, **extra: str) -> dict[str, str]:
    # AGENTIC_BACKUP_DIR stays set: the URL wins, and nothing may be written there.
    return env(url, workdir, **s3.env(), AGENTIC_BACKUP_URL=f"s3://{bucket}/{PREFIX}", **extra)


def bucket_objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    """Every object under PREFIX: key (relative to it) -> bytes."""
    client = s3.client()
    found: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"].removeprefix(f"{PREFIX}/")] = body
    return found


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_s3_destination_round_trip(
    s3: S3Server, bucket: str, source: str, target: str, spare: str, tmp_path: Path
) -> None:
    add_project(source, "alpha")
    add_project(source, "beta")
    put_objects(tmp_path / "objects", 3, 5000)
    environ = s3_env(s3, bucket, source, tmp_path)

    created: dict[str, Any] = backup_cli("create", environ=environ)["created"]
    name = created["name"]
    assert created["path"] == f"s3://{bucket}/{PREFIX}/{name}"
    assert created["verify_time"] is not None
    assert not (tmp_path / "backups").exists()  # the directory setting was not used

    # The bucket holds the manifest, the verification record and exactly the listed
    # files, each with the listed sha256; the objects are the source store's bytes.
    stored = bucket_objects(s3, bucket)
    manifest = json.loads(stored[f"{name}/manifest.json"])
    files = {f["path"]: (f["size_bytes"], f["sha256"]) for f in manifest["files"]}
    assert set(stored) == {f"{name}/{p}" for p in files} | {
        f"{name}/manifest.json",
        f"{name}/verified.json",
    }
    for path, (size, digest) in files.items():
        assert (len(stored[f"{name}/{path}"]), sha(stored[f"{name}/{path}"])) == (size, digest)
    source_objects = tree(tmp_path / "objects")
    assert {
        p.removeprefix("objects/"): d
        for p, (_, d) in files.items()
        if p != manifest["database"]["file"]
    } == {k: sha(v) for k, v in source_objects.items()}

    listed = backup_cli("list", environ=environ)
    assert listed["directory"] == f"s3://{bucket}/{PREFIX}"
    assert [b["name"] for b in listed["backups"]] == [name]
    assert listed["backups"][0]["verify_time"] is not None
    assert backup_cli("verify", environ=environ)["ok"]

    # Restore into an empty database and an empty object store.
    restored_env = {
        **environ,
        "DATABASE_URL": target,
        "AGENTIC_OBJECT_STORE_URL": (tmp_path / "restored").as_uri(),
    }
    restored = backup_cli("restore", environ=restored_env)["restored"]
    assert restored["objects_restored"] == 3
    assert project_names(target) == ["alpha", "beta"]
    assert tree(tmp_path / "restored") == source_objects

    # One object damaged in the bucket: verify fails and forgets the verification; restore
    # refuses, and the spare target stays as it was (no database, no objects).
    victim = next(p for p in files if p.startswith("objects/"))
    s3.client().put_object(Bucket=bucket, Key=f"{PREFIX}/{name}/{victim}", Body=b"rotten")
    checked = backup_cli("verify", environ=environ, expect=EXIT_FAILED)
    assert not checked["ok"]
    assert any(victim in problem for problem in checked["problems"]), checked
    assert backup_cli("list", environ=environ)["backups"][0]["verify_time"] is None
    spare_env = {
        **environ,
        "DATABASE_URL": spare,
        "AGENTIC_OBJECT_STORE_URL": (tmp_path / "spare-objects").as_uri(),
    }
    refused = backup_cli("restore", environ=spare_env, expect=EXIT_FAILED)
    assert "corrupt" in refused["error"]
    assert not (tmp_path / "spare-objects").exists()
    if spare.startswith("sqlite"):
        assert not Path(spare.removeprefix("sqlite:///")).exists()
    else:
        add_project(spare, "still-empty")  # migrates the untouched database first
        assert project_names(spare) == ["still-empty"]


def test_a_failed_upload_leaves_nothing_listed_and_prune_deletes_whole_backups(
    s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    add_project(url, "alpha")
    put_objects(tmp_path / "objects", 2, 1000)
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    config = BackupConfig(backup_url=f"s3://{bucket}/{PREFIX}")
    destination = open_destination(config)
    assert isinstance(destination, S3Destination)
    store = open_store((tmp_path / "objects").as_uri())

    # The upload of the second file fails: the first one is removed again, no manifest.
    uploaded: list[str] = []
    in_bucket: dict[str, bytes] = {}
    listed: list[StoredBackup] = []
    real_upload = destination.client.upload_file

    def failing(filename: str, bucket_name: str, key: str) -> None:
        if uploaded:
            # Half uploaded: S3 holds a file of the backup, but no backup is listed yet.
            in_bucket.update(bucket_objects(s3, bucket))
            listed.extend(destination.backups()[0])
            raise S3UploadFailedError(f"injected failure uploading {key}")
        uploaded.append(key)
        real_upload(filename, bucket_name, key)

    monkeypatch.setattr(destination.client, "upload_file", failing)
    with pytest.raises(BackupError, match="injected failure"):
        create(destination, url, store, version="t")
    assert [f"{PREFIX}/{key}" for key in in_bucket] == uploaded
    assert listed == []
    assert bucket_objects(s3, bucket) == {}
    monkeypatch.undo()

    # A stray upload without a manifest (a backup being written) is not listed.
    s3.client().put_object(Bucket=bucket, Key=f"{PREFIX}/20990101T000000Z-abcdef/x", Body=b"x")
    environ = s3_env(s3, bucket, url, tmp_path, AGENTIC_BACKUP_KEEP_LAST="1")
    environ["AGENTIC_BACKUP_KEEP_DAYS"] = "0"
    names = [backup_cli("create", environ=environ)["created"]["name"] for _ in range(3)]
    assert [b["name"] for b in backup_cli("list", environ=environ)["backups"]] == names

    pruned = backup_cli("prune", environ=environ)
    assert pruned["deleted"] == [names[1], names[0]]
    left = {key.split("/")[0] for key in bucket_objects(s3, bucket)}
    # Young leftovers stay (they may be uploads in progress); the pruned backups are gone.
    assert left == {names[2], "20990101T000000Z-abcdef"}
