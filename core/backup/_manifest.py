"""The manifest: what one backup holds, written last, so a backup without one is not whole.

A backup is a directory: the database dump, the copied objects under ``objects/``, and
``manifest.json``, which names every file with its size and sha256, the time, the Alembic
revision of the dumped schema and the application version. ``verify`` and ``restore``
trust nothing that the manifest does not list with a matching checksum. For an S3 object
store nothing is copied: ``remote_objects`` lists the keys with their sizes and checksums
(see docs/operations.md on bucket versioning).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "FileEntry",
    "Manifest",
    "ManifestError",
    "copy_with_sha256",
    "sha256_file",
]

FORMAT = 1
MANIFEST_NAME = "manifest.json"
_CHUNK = 1024 * 1024


class ManifestError(ValueError):
    """A manifest that cannot be read or does not describe a backup."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a backup (``path`` relative to its directory), or one remote object
    (``path`` is its key)."""

    path: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything a backup holds and where it came from."""

    name: str
    create_time: datetime
    app_version: str
    database_backend: str
    """``sqlite`` or ``postgresql``."""
    alembic_revision: str
    """The schema revision of the dumped database (its ``alembic_version``)."""
    database_file: str
    """The dump among ``files``."""
    object_store: str
    """``file`` (objects copied under ``objects/``) or ``s3`` (listed in remote_objects)."""
    files: tuple[FileEntry, ...]
    remote_objects: tuple[FileEntry, ...] = ()

    def to_json(self) -> str:
        """The manifest as written to ``manifest.json``."""
        body: dict[str, Any] = {
            "format": FORMAT,
            "name": self.name,
            "create_time": self.create_time.isoformat(),
            "app_version": self.app_version,
            "database": {
                "backend": self.database_backend,
                "alembic_revision": self.alembic_revision,
                "file": self.database_file,
            },
            "object_store": self.object_store,
            "files": [_entry(f) for f in self.files],
            "remote_objects": [_entry(f) for f in self.remote_objects],
        }
        return json.dumps(body, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse ``manifest.json``; ManifestError when it is not one of ours."""
        try:
            body = json.loads(text)
            if body["format"] != FORMAT:
                raise ManifestError(f"manifest format {body['format']!r}, this code reads {FORMAT}")
            database = body["database"]
            manifest = cls(
                name=str(body["name"]),
                create_time=datetime.fromisoformat(body["create_time"]),
                app_version=str(body["app_version"]),
                database_backend=str(database["backend"]),
                alembic_revision=str(database["alembic_revision"]),
                database_file=str(database["file"]),
                object_store=str(body["object_store"]),
                files=tuple(_parse_entry(f) for f in body["files"]),
                remote_objects=tuple(_parse_entry(f) for f in body["remote_objects"]),
            )
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"not a backup manifest: {exc!r}") from None
        if manifest.create_time.tzinfo is None:
            raise ManifestError("create_time has no time zone")
        if manifest.database_file not in {f.path for f in manifest.files}:
            raise ManifestError(f"the dump {manifest.database_file} is not among the files")
        for entry in manifest.files:
            parts = Path(entry.path).parts
            # The paths are joined to a directory on restore: none may climb out of it.
            if Path(entry.path).is_absolute() or ".." in parts or not parts:
                raise ManifestError(f"file path {entry.path!r} leaves the backup")
        return manifest

    @property
    def object_files(self) -> tuple[FileEntry, ...]:
        """The copied objects (paths under ``objects/``)."""
        return tuple(f for f in self.files if f.path.startswith("objects/"))

    @property
    def size_bytes(self) -> int:
        """Bytes the backup holds."""
        return sum(f.size_bytes for f in self.files)


def _entry(entry: FileEntry) -> dict[str, Any]:
    return {"path": entry.path, "size_bytes": entry.size_bytes, "sha256": entry.sha256}


def _parse_entry(raw: Any) -> FileEntry:
    size, digest = int(raw["size_bytes"]), str(raw["sha256"])
    if size < 0 or len(digest) != 64:
        raise ValueError(f"bad size or sha256 for {raw.get('path')!r}")
    return FileEntry(path=str(raw["path"]), size_bytes=size, sha256=digest)


def sha256_file(path: Path) -> tuple[int, str]:
    """Size and sha256 (hex) of a file, read in pieces."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while piece := handle.read(_CHUNK):
            digest.update(piece)
            size += len(piece)
    return size, digest.hexdigest()


def copy_with_sha256(source: Path, target: Path) -> tuple[int, str]:
    """Copy ``source`` to ``target`` (fsynced), hashing the bytes as they pass: size and
    sha256 of what was written."""
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, target.open("wb") as writer:
        while piece := reader.read(_CHUNK):
            digest.update(piece)
            writer.write(piece)
            size += len(piece)
        writer.flush()
        os.fsync(writer.fileno())
    return size, digest.hexdigest()
