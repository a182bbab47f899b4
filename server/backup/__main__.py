"""``python -m server.backup create|list|verify|restore|prune``: backups of the database and
the object store, and the restore of one.

Reads the server's ``DATABASE_URL`` and ``AGENTIC_OBJECT_STORE_URL`` and the backup
settings (``AGENTIC_BACKUP_DIR`` or ``AGENTIC_BACKUP_URL``, ``AGENTIC_BACKUP_KEEP_LAST``,
``AGENTIC_BACKUP_KEEP_DAYS``) from the environment; prints one JSON object. Exit codes:
0 done; 1 the operation failed (a backup that could not be made or failed its
verification, a corrupt backup refused, a failed restore); 2 a configuration or usage
error (no backup destination among them); 3 restore refused because the target
database holds rows (pass ``--force`` to replace them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import core.backup as _backup
from core.backup import BackupConfig, DatabaseError, StoredBackup, open_destination
from core.config import ConfigError, read_env
from core.objects import ObjectStore, open_store
from server._config import ServerConfig

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3


def _summary(backup: StoredBackup) -> dict[str, Any]:
    manifest = backup.manifest
    return {
        "name": backup.name,
        "path": backup.location,
        "create_time": manifest.create_time.isoformat(),
        "verify_time": backup.verify_time.isoformat() if backup.verify_time else None,
        "app_version": manifest.app_version,
        "database_backend": manifest.database_backend,
        "alembic_revision": manifest.alembic_revision,
        "object_store": manifest.object_store,
        "files": len(manifest.files),
        "objects": len(manifest.object_files) or len(manifest.remote_objects),
        "size_bytes": manifest.size_bytes,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server.backup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="back up the database and the objects, verify")
    create.add_argument("--prune", action="store_true", help="then prune (after it verified)")
    commands.add_parser("list", help="the backups, oldest first")
    verify = commands.add_parser("verify", help="re-read every checksum and check the dump")
    verify.add_argument("name", nargs="?", help="the backup (default: the newest)")
    restore = commands.add_parser("restore", help="restore a backup into an empty database")
    restore.add_argument("name", nargs="?", help="the backup (default: the newest)")
    restore.add_argument("--force", action="store_true", help="replace a target that holds rows")
    commands.add_parser("prune", help="delete the backups the retention settings let go")
    return parser


def _run(args: argparse.Namespace, config: BackupConfig, server: ServerConfig) -> int:
    destination = open_destination(config)
    store: ObjectStore = open_store(
        server.object_store_url, part_bytes=server.object_store_part_bytes
    )
    out: dict[str, Any]
    code = 0
    if args.command == "create":
        backup = _backup.create(
            destination, server.database_url, store, version=_backup.app_version(config.app_version)
        )
        out = {"created": _summary(backup)}
        if args.prune:
            plan, leftovers = _backup.prune(
                destination, keep_last=config.keep_last, keep_days=config.keep_days
            )
            out["pruned"] = {"deleted": list(plan.delete), "leftovers_removed": leftovers}
    elif args.command == "list":
        backups, broken = destination.backups()
        out = {
            "directory": destination.url,
            "backups": [_summary(b) for b in backups],
            "unreadable": [{"name": n, "problem": p} for n, p in broken],
        }
    elif args.command == "verify":
        report = _backup.verify(destination, _backup.find(destination, args.name), store)
        out = {**asdict(report), "ok": report.ok}
        code = 0 if report.ok else EXIT_FAILED
    elif args.command == "restore":
        restored = _backup.restore(
            destination,
            _backup.find(destination, args.name),
            server.database_url,
            store,
            force=args.force,
        )
        out = {"restored": asdict(restored)}
    else:
        plan, leftovers = _backup.prune(
            destination, keep_last=config.keep_last, keep_days=config.keep_days
        )
        out = {
            "kept": list(plan.keep),
            "deleted": list(plan.delete),
            "held_back": plan.held_back,
            "leftovers_removed": leftovers,
        }
    print(json.dumps(out, default=str))
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # The command serves nobody: the server's authentication settings do not concern it.
        server = ServerConfig.from_env({**os.environ, "AGENTIC_AUTH_ENABLED": "false"})
        config = read_env(BackupConfig)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not config.destination:
        print("configuration error: set AGENTIC_BACKUP_DIR or AGENTIC_BACKUP_URL", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(args, config, server)
    except _backup.RestoreRefusedError as exc:
        print(json.dumps({"error": str(exc), "refused": True}))
        return EXIT_REFUSED
    except (_backup.BackupError, DatabaseError, OSError, ValueError) as exc:
        print(json.dumps({"error": str(exc), "time": datetime.now(UTC).isoformat()}))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
