"""The pure parts of backups: the retention rules, the manifest's parsing and the settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from core.backup import BackupConfig, Candidate, FileEntry, Manifest, ManifestError, plan
from core.config import ConfigError, read_env
from server._config import ServerConfig
from workers._config import WorkerConfig

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DIGEST = "a" * 64
DUMP = {"path": "database.sqlite3", "size_bytes": 10, "sha256": DIGEST}


def backups(*specs: tuple[float, bool]) -> list[Candidate]:
    """(age in days, verified) each, named b<age>."""
    return [Candidate(f"b{age:g}", NOW - timedelta(days=age), ok) for age, ok in specs]


def test_keeps_the_last_n_and_the_young_ones_deletes_the_rest() -> None:
    got = plan(
        backups((0, True), (1, True), (2, True), (10, True), (20, True), (30, True)),
        keep_last=2,
        keep_days=5,
        now=NOW,
    )
    assert got.keep == ("b0", "b1", "b2")
    assert got.delete == ("b10", "b20", "b30")
    assert got.held_back == ""


def test_keep_last_counts_old_backups_when_there_are_no_young_ones() -> None:
    got = plan(backups((30, True), (40, True), (50, True)), keep_last=2, keep_days=1, now=NOW)
    assert got.keep == ("b30", "b40")
    assert got.delete == ("b50",)


def test_nothing_is_deleted_while_the_newest_backup_is_unverified() -> None:
    got = plan(backups((0, False), (10, True), (20, True)), keep_last=1, keep_days=0, now=NOW)
    assert got.delete == ()
    assert "b0" in got.held_back


def test_the_newest_verified_backup_survives_keep_last_and_keep_days() -> None:
    # Deletion needs a verified newest backup, which keep_last >= 1 keeps anyway; an older
    # backup that failed a later verify does not count as verified.
    got = plan(backups((40, True), (50, False), (60, True)), keep_last=1, keep_days=0, now=NOW)
    assert got.keep == ("b40",)
    assert got.delete == ("b50", "b60")


def test_no_backups_no_plan_and_keep_last_must_be_positive() -> None:
    assert plan([], keep_last=1, keep_days=1, now=NOW).delete == ()
    with pytest.raises(ValueError, match="keep_last"):
        plan(backups((0, True)), keep_last=0, keep_days=1, now=NOW)


def manifest(**changes: object) -> Manifest:
    base = Manifest(
        name="20261202T120000Z-abcdef",
        create_time=NOW,
        app_version="v1",
        database_backend="sqlite",
        alembic_revision="0006",
        database_file="database.sqlite3",
        object_store="file",
        files=(
            FileEntry("database.sqlite3", 10, DIGEST),
            FileEntry("objects/projects/p/artifacts/a", 3, "b" * 64),
        ),
    )
    body = json.loads(base.to_json())
    body.update(changes)
    return Manifest.from_json(json.dumps(body))


def test_a_manifest_reads_back_as_written() -> None:
    got = manifest()
    assert got.alembic_revision == "0006"
    assert got.create_time == NOW
    assert [f.path for f in got.object_files] == ["objects/projects/p/artifacts/a"]
    assert got.size_bytes == 13


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": 2}, "format"),
        ({"files": [DUMP, {"path": "../etc/passwd", "size_bytes": 1, "sha256": DIGEST}]}, "leaves"),
        ({"files": [DUMP, {"path": "/etc/passwd", "size_bytes": 1, "sha256": DIGEST}]}, "leaves"),
        ({"files": []}, "not among the files"),
        ({"files": [{"path": "database.sqlite3", "size_bytes": 1, "sha256": "x"}]}, "sha256"),
        ({"create_time": "2026-12-02T12:00:00"}, "time zone"),
        ({"name": None, "database": None}, "not a backup manifest"),
    ],
)
def test_a_manifest_that_is_not_whole_or_leaves_its_directory_is_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ManifestError, match=message):
        manifest(**changes)


def test_the_server_and_the_worker_read_the_one_backup_declaration() -> None:
    env = {
        "AGENTIC_BACKUP_URL": "s3://bucket/some/prefix/",
        "AGENTIC_BACKUP_KEEP_LAST": "3",
        "AGENTIC_AUTH_ENABLED": "false",
    }
    for config in (ServerConfig.from_env(env).backup, WorkerConfig.from_env(env).backup):
        assert config == BackupConfig(backup_url="s3://bucket/some/prefix", keep_last=3)
        assert config.destination == "s3://bucket/some/prefix"
    # Set but empty: no destination at all (ListBackups' FAILED_PRECONDITION).
    assert read_env(BackupConfig, {"AGENTIC_BACKUP_DIR": ""}).destination == ""
    assert read_env(BackupConfig, {}).destination == "var/backups"
    with pytest.raises(ConfigError, match="AGENTIC_BACKUP_URL"):
        read_env(BackupConfig, {"AGENTIC_BACKUP_URL": "/var/backups"})
