"""Backups under an S3 prefix (``AGENTIC_BACKUP_URL=s3://bucket/prefix``), one prefix each.

Backup ``n`` is the objects ``<prefix>/n/<file>`` and ``<prefix>/n/manifest.json``. The
files are written locally first, then uploaded; the manifest is uploaded last, and a
single PUT is atomic, so a backup whose upload failed or was killed has no manifest and
is never listed (``prune`` removes such leftovers once a day old). A deletion first PUTs
``n/.deleting`` and deletes the manifest, so an interrupted one leaves no backup that looks
whole, and the next ``prune`` finishes it. ``n/verified.json`` records the last passed
verify; ``verify`` and ``restore`` download the files to a temporary directory and check
them there. In a versioned bucket a deleted backup stays as non-current versions until
the bucket's lifecycle rule expires them (see docs/operations.md).

The client is built like the object store's (``core.objects``), with the same timeouts,
retries and ``AWS_*`` settings; its errors become BackupError.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from boto3.exceptions import S3TransferFailedError, S3UploadFailedError

from core.backup._destination import (
    PARTIAL_MAX_AGE_SECONDS,
    VERIFIED_NAME,
    Progress,
    StoredBackup,
    parse_verified,
    verified_record,
)
from core.backup._directory import new_name
from core.backup._errors import BackupError
from core.backup._manifest import MANIFEST_NAME, Manifest, ManifestError
from core.objects import ObjectMissingError, ObjectStoreError

# The S3 module itself, not the package: boto3 loads only in processes that use S3.
from core.objects._s3 import s3_client, translated_errors

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = ["S3Destination"]

DELETING_NAME = ".deleting"
_DELETE_BATCH = 1000  # S3's most keys per DeleteObjects request


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """S3 failures as BackupError (ObjectMissingError passes: callers decide)."""
    try:
        with translated_errors(what):
            yield
    except ObjectMissingError:
        raise
    except ObjectStoreError as exc:
        raise BackupError(str(exc)) from exc
    except (S3UploadFailedError, S3TransferFailedError) as exc:
        raise BackupError(f"{what}: {exc}") from exc


class S3Destination:
    """The backups under one S3 prefix."""

    def __init__(self, bucket: str, prefix: str, client: S3Client | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = client if client is not None else s3_client()

    @classmethod
    def from_url(cls, url: str) -> S3Destination:
        """The destination ``s3://bucket/prefix``."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return cls(bucket, prefix)

    def _key(self, name: str, path: str = "") -> str:
        base = f"{self.prefix}/{name}/" if self.prefix else f"{name}/"
        return base + path

    def _url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name).rstrip('/')}"

    def _read(self, key: str) -> str | None:
        """The object's text; None when there is none."""
        try:
            with _errors(f"reading s3://{self.bucket}/{key}"):
                answer = self.client.get_object(Bucket=self.bucket, Key=key)
                return answer["Body"].read().decode()
        except ObjectMissingError:
            return None

    def _put(self, key: str, body: str) -> None:
        with _errors(f"writing s3://{self.bucket}/{key}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body.encode())

    def _keys(self, name: str) -> list[tuple[str, float]]:
        """(key, last-modified epoch) of every object of backup ``name``."""
        found: list[tuple[str, float]] = []
        with _errors(f"listing {self._url(name)}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(name)
            )
            for page in pages:
                for item in page.get("Contents", []):
                    found.append((item["Key"], item["LastModified"].timestamp()))
        return found

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            with _errors(f"deleting {len(batch)} objects in s3://{self.bucket}"):
                self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )

    def _names(self) -> list[str]:
        """The names of every prefix under ours (backups, partial or not)."""
        names: list[str] = []
        base = f"{self.prefix}/" if self.prefix else ""
        with _errors(f"listing {self.url}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    names.append(common["Prefix"].removeprefix(base).rstrip("/"))
        return sorted(names)

    def begin(self, now: datetime) -> tuple[str, Path]:
        """A new backup's name and a local temporary directory to write it into."""
        name = new_name(now)
        return name, Path(tempfile.mkdtemp(prefix=f"backup-{name}-"))

    def complete(
        self, partial: Path, manifest: Manifest, progress: Progress | None = None
    ) -> StoredBackup:
        """Upload the files, then the manifest: from here on the backup is whole. On
        failure the uploaded files are deleted (best effort: a leftover has no manifest)."""
        name = manifest.name
        try:
            for entry in manifest.files:
                key = self._key(name, entry.path)
                with _errors(f"uploading s3://{self.bucket}/{key}"):
                    self.client.upload_file(str(partial / entry.path), self.bucket, key)
                if progress is not None:
                    progress(f"uploaded {entry.path} ({entry.size_bytes} bytes)")
            self._put(self._key(name, MANIFEST_NAME), manifest.to_json())
        except BaseException:
            # Else a leftover without a manifest: prune removes it later.
            with contextlib.suppress(BackupError):
                self._delete_keys([k for k, _ in self._keys(name)])
            raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return StoredBackup(self._url(name), manifest, None)

    @staticmethod
    def abandon(partial: Path) -> None:
        """Remove the local files of a failed backup (``complete`` cleans up S3)."""
        shutil.rmtree(partial, ignore_errors=True)

    def backups(self) -> tuple[list[StoredBackup], list[tuple[str, str]]]:
        """The complete backups, oldest first, and (name, problem) of those whose manifest
        cannot be read. Prefixes without a manifest (being written) are left out."""
        found: list[StoredBackup] = []
        broken: list[tuple[str, str]] = []
        for name in self._names():
            if name.startswith("."):
                continue
            body = self._read(self._key(name, MANIFEST_NAME))
            if body is None:
                continue
            try:
                found.append(self._stored(name, body))
            except ManifestError as exc:
                broken.append((name, str(exc)))
        found.sort(key=lambda b: (b.manifest.create_time, b.name))
        return found, broken

    def _stored(self, name: str, body: str) -> StoredBackup:
        manifest = Manifest.from_json(body)
        if manifest.name != name:
            raise ManifestError(f"{name}'s manifest names {manifest.name!r}")
        marker = self._read(self._key(name, VERIFIED_NAME))
        verify_time = parse_verified(marker) if marker is not None else None
        return StoredBackup(self._url(name), manifest, verify_time)

    def get(self, name: str) -> StoredBackup:
        """The backup ``name``; ManifestError when there is none or it is not whole."""
        body = None
        if name and not name.startswith(".") and "/" not in name:
            body = self._read(self._key(name, MANIFEST_NAME))
        if body is None:
            raise ManifestError(f"no backup {name!r} in {self.url}")
        return self._stored(name, body)

    @contextmanager
    def local_copy(self, backup: StoredBackup) -> Iterator[Path]:
        """The backup's files downloaded into a temporary directory (a file S3 no longer
        holds is left out, for the check to report)."""
        root = Path(tempfile.mkdtemp(prefix=f"backup-{backup.name}-"))
        try:
            for entry in backup.manifest.files:
                target = root / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                key = self._key(backup.name, entry.path)
                try:
                    with _errors(f"downloading s3://{self.bucket}/{key}"):
                        self.client.download_file(self.bucket, key, str(target))
                except ObjectMissingError:
                    target.unlink(missing_ok=True)
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def mark_verified(self, backup: StoredBackup, now: datetime) -> StoredBackup:
        """Record that ``backup`` passed verification at ``now`` (one PUT: whole or none)."""
        self._put(self._key(backup.name, VERIFIED_NAME), verified_record(now))
        return StoredBackup(backup.location, backup.manifest, now)

    def clear_verified(self, backup: StoredBackup) -> None:
        """Forget a verification: the backup failed a later one."""
        with _errors(f"deleting the verification of {backup.location}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(backup.name, VERIFIED_NAME))

    def delete(self, name: str) -> None:
        """Mark the deletion, delete the manifest (no longer a backup), then the rest."""
        self._put(self._key(name, DELETING_NAME), "")
        with _errors(f"deleting the manifest of {self._url(name)}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name, MANIFEST_NAME))
        keys = [k for k, _ in self._keys(name) if not k.endswith(f"/{DELETING_NAME}")]
        self._delete_keys(keys)
        self._delete_keys([self._key(name, DELETING_NAME)])

    def remove_leftovers(self, now: float | None = None) -> list[str]:
        """Remove uploads without a manifest older than PARTIAL_MAX_AGE_SECONDS and
        interrupted deletions; their names."""
        cutoff = (time.time() if now is None else now) - PARTIAL_MAX_AGE_SECONDS
        removed: list[str] = []
        for name in self._names():
            keys = self._keys(name)
            names = {k.removeprefix(self._key(name)) for k, _ in keys}
            if MANIFEST_NAME in names and DELETING_NAME not in names:
                continue
            deleting = DELETING_NAME in names
            if deleting or (keys and max(at for _, at in keys) < cutoff):
                self._delete_keys([k for k, _ in keys])
                removed.append(name)
        return removed
