"""``python -m server.backup`` as an operator runs it, on real SQLite and PostgreSQL databases:
a corrupt backup is refused with the target untouched, a failed or killed backup leaves
nothing that looks whole, a target with rows needs --force, an older schema is migrated up,
and prune keeps what the rules say."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import insert, select

import core.backup._manifest
import core.backup._objects
from core.backup import BackupDirectory, BackupError, create
from core.backup._database import head_revision
from core.db import ProjectRow, make_engine, migrate
from core.db._engine import MIGRATIONS
from core.objects import open_store
from tests._processes import run_module
from tests._support import REPO, wait_for

EXIT_FAILED, EXIT_REFUSED = 1, 3


def add_project(url: str, name: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        migrate(engine)
        with engine.begin() as conn:
            now = datetime.now(UTC)
            conn.execute(
                insert(ProjectRow).values(
                    id=str(uuid.uuid4()),
                    name=name,
                    description="",
                    owner_id="alice",
                    create_time=now,
                    update_time=now,
                    version=1,
                )
            )
    finally:
        engine.dispose()


def project_names(url: str) -> list[str]:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(select(ProjectRow.name)).scalars())
    finally:
        engine.dispose()


def put_objects(root: Path, count: int, size: int) -> None:
    for i in range(count):
        path = root / "projects" / "p" / "artifacts" / f"a{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def env(url: str, workdir: Path, objects: str = "objects", **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "AGENTIC_OBJECT_STORE_URL": (workdir / objects).as_uri(),
        "AGENTIC_BACKUP_DIR": str(workdir / "backups"),
        **extra,
    }


def backup_cli(*args: str, environ: dict[str, str], expect: int = 0) -> dict[str, Any]:
    done = run_module("server.backup", *args, env=environ, timeout=60)
    assert done.returncode == expect, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("damaged", ["object", "dump"])
def test_a_corrupt_backup_is_refused_and_the_target_left_untouched(
    source: str, target: str, tmp_path: Path, damaged: str
) -> None:
    add_project(source, "backed-up")
    put_objects(tmp_path / "objects", 2, 1000)
    created = backup_cli("create", environ=env(source, tmp_path))["created"]
    path = Path(created["path"])
    victim = (
        next((path / "objects").rglob("a1"))
        if damaged == "object"
        else next(p for p in path.iterdir() if p.name.startswith("database."))
    )
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    checked = backup_cli("verify", environ=env(source, tmp_path), expect=EXIT_FAILED)
    assert not checked["ok"]
    assert any(victim.name in problem for problem in checked["problems"]), checked

    # The target has rows and objects of its own; even --force must not touch them.
    add_project(target, "already-here")
    put_objects(tmp_path / "target-objects", 1, 10)
    before = tree(tmp_path / "target-objects")
    environ = env(target, tmp_path, objects="target-objects")
    refused = backup_cli("restore", "--force", environ=environ, expect=EXIT_FAILED)
    assert "corrupt" in refused["error"]
    assert project_names(target) == ["already-here"]
    assert tree(tmp_path / "target-objects") == before
    # And prune keeps it as it is: a backup that failed verification is no verified backup.
    assert backup_cli("prune", environ=environ)["held_back"]


def test_a_target_with_rows_needs_force(source: str, target: str, tmp_path: Path) -> None:
    add_project(source, "backed-up")
    backup_cli("create", environ=env(source, tmp_path))
    add_project(target, "already-here")
    environ = env(target, tmp_path, objects="target-objects")
    refused = backup_cli("restore", environ=environ, expect=EXIT_REFUSED)
    assert refused["refused"]
    assert "--force" in refused["error"]
    assert project_names(target) == ["already-here"]
    backup_cli("restore", "--force", environ=environ)
    assert project_names(target) == ["backed-up"]


def test_a_backup_of_an_older_schema_is_migrated_up(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 'old.db'}", f"sqlite:///{tmp_path / 'new.db'}"
    engine = make_engine(source, pool_size=1)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0005")
    finally:
        engine.dispose()
    created = backup_cli("create", environ=env(source, tmp_path))["created"]
    assert created["alembic_revision"] == "0005"
    restored = backup_cli("restore", environ=env(target, tmp_path, objects="o2"))["restored"]
    assert (restored["from_revision"], restored["to_revision"]) == ("0005", head_revision())
    add_project(target, "after")  # the newest schema's tables are there
    assert project_names(target) == ["after"]


def test_a_failed_backup_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    add_project(url, "p")
    put_objects(tmp_path / "objects", 3, 100)
    copies = {"n": 0}
    real = core.backup._manifest.copy_with_sha256

    def failing(source: Path, target: Path) -> tuple[int, str]:
        copies["n"] += 1
        if copies["n"] == 2:
            raise OSError("No space left on device")
        return real(source, target)

    monkeypatch.setattr(core.backup._objects, "copy_with_sha256", failing)
    directory = BackupDirectory(tmp_path / "backups")
    with pytest.raises(BackupError, match="No space left"):
        create(directory, url, open_store((tmp_path / "objects").as_uri()), version="t")
    assert copies["n"] == 2
    assert list((tmp_path / "backups").iterdir()) == []


def test_a_killed_backup_leaves_nothing_that_looks_whole(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    add_project(url, "p")
    # Enough bytes that the copy is still running when the first object appears.
    put_objects(tmp_path / "objects", 48, 4 * 1024 * 1024)
    backups = tmp_path / "backups"
    process = subprocess.Popen(
        [sys.executable, "-m", "server.backup", "create"],
        cwd=REPO,
        env=env(url, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def copying() -> bool:
            assert process.poll() is None, "the backup ended before it could be killed"
            return any(backups.glob(".*.partial/objects/projects/p/artifacts/a*"))

        wait_for(copying, timeout=30, message="the backup to start copying objects")
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(10)
    assert process.returncode == -signal.SIGKILL
    assert backup_cli("list", environ=env(url, tmp_path))["backups"] == []
    (partial,) = backups.iterdir()
    assert partial.name.startswith(".")
    assert not (partial / "manifest.json").exists()
    # Too young to be a leftover: it could be a backup still being written...
    assert backup_cli("prune", environ=env(url, tmp_path))["leftovers_removed"] == []
    # ...while a later backup is whole beside it, and prune removes the leftover once old.
    backup_cli("create", environ=env(url, tmp_path))
    old = datetime.now(UTC).timestamp() - 2 * 24 * 3600
    os.utime(partial, (old, old))
    pruned = backup_cli("prune", environ=env(url, tmp_path))
    assert pruned["leftovers_removed"] == [partial.name]
    assert len(pruned["kept"]) == 1


def test_prune_keeps_the_last_n_once_the_newest_is_verified(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    add_project(url, "p")
    environ = env(url, tmp_path, AGENTIC_BACKUP_KEEP_LAST="2", AGENTIC_BACKUP_KEEP_DAYS="0")
    names = [backup_cli("create", environ=environ)["created"]["name"] for _ in range(3)]
    # The newest loses its verification: nothing may go.
    (tmp_path / "backups" / names[-1] / "verified.json").unlink()
    held = backup_cli("prune", environ=environ)
    assert held["deleted"] == []
    assert names[-1] in held["held_back"]
    backup_cli("verify", names[-1], environ=environ)
    pruned = backup_cli("prune", environ=environ)
    assert pruned["deleted"] == [names[0]]
    assert [b["name"] for b in backup_cli("list", environ=environ)["backups"]] == names[1:]
