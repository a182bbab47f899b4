"""The object half of a backup: the artifact bytes beside the database.

A ``file://`` store is copied: every object under the store's directory (its
``.staging`` uploads and pins aside, which no row needs), hashed as it is copied. An
``s3://`` store is not copied (a bucket is backed up by its own versioning and
replication, see docs/operations.md): the backup lists the key, size and sha256 of every
ready artifact, so ``verify`` and ``restore`` can say which objects the bucket no longer
holds.

The database is dumped first and the objects copied after: an artifact finished in
between has bytes but no row in the backup (harmless, the bytes are unreferenced); one
deleted in between has a row whose bytes may be missing (the window is the copy's
duration; ``restore`` reports such objects).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import select

from core.artifacts import READY
from core.backup._manifest import FileEntry, copy_with_sha256
from core.db import ArtifactRow, make_engine
from core.objects import KEY_PATTERN, ObjectStore

__all__ = [
    "OBJECTS_DIR",
    "copy_objects",
    "is_local",
    "list_remote",
    "missing_remote",
    "put_back",
]

OBJECTS_DIR = "objects"


def _is_local(store: ObjectStore) -> bool:
    return store.url.startswith("file:")


def _root(store: ObjectStore) -> Path:
    # A file store's url is its absolute directory as a file:// URI.
    assert _is_local(store), store.url
    return Path(unquote(urlsplit(store.url).path))


def copy_objects(store: ObjectStore, directory: Path) -> list[FileEntry] | None:
    """Copy every object of a file store under ``directory/objects``: their entries, or
    None when the store is not local (S3: see ``list_remote``)."""
    if not _is_local(store):
        return None
    root = _root(store)
    entries: list[FileEntry] = []
    if not root.exists():
        return entries
    for folder, subfolders, names in os.walk(root):
        here = Path(folder)
        if here == root:
            subfolders[:] = [s for s in subfolders if s != ".staging"]
        subfolders.sort()
        for name in sorted(names):
            key = (here / name).relative_to(root).as_posix()
            if not KEY_PATTERN.fullmatch(key):
                continue  # not an object: the store writes nothing else outside .staging
            size, digest = copy_with_sha256(here / name, directory / OBJECTS_DIR / key)
            entries.append(FileEntry(f"{OBJECTS_DIR}/{key}", size, digest))
    return entries


def list_remote(database_url: str) -> list[FileEntry]:
    """Key, size and sha256 of every ready artifact, from the database."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(ArtifactRow.object_key, ArtifactRow.size_bytes, ArtifactRow.sha256)
                .where(ArtifactRow.state == READY)
                .order_by(ArtifactRow.object_key)
            ).all()
    finally:
        engine.dispose()
    return [FileEntry(str(key), int(size), str(digest)) for key, size, digest in rows]


def missing_remote(store: ObjectStore, entries: tuple[FileEntry, ...]) -> list[str]:
    """The listed keys the store does not hold at their listed size."""
    return [e.path for e in entries if store.size(e.path) != e.size_bytes]


def put_back(store: ObjectStore, directory: Path, entries: tuple[FileEntry, ...]) -> int:
    """Copy the backup's objects into a file store (each staged, checked and renamed into
    place, so a reader never sees a partial object); the number copied."""
    root = _root(store)
    staging = root / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        key = entry.path.removeprefix(f"{OBJECTS_DIR}/")
        staged = staging / f"restore-{uuid.uuid4().hex}"
        try:
            size, digest = copy_with_sha256(directory / entry.path, staged)
            if (size, digest) != (entry.size_bytes, entry.sha256):
                raise OSError(f"{entry.path} changed while it was restored")
            final = root / key
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
        finally:
            staged.unlink(missing_ok=True)
    return len(entries)


def is_local(store: ObjectStore) -> bool:
    """True for a store whose objects a backup copies (``file://``)."""
    return _is_local(store)
