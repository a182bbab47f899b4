"""The building blocks under the artifact rows, each run once in the benchmark process.

They take the API server apart without instrumenting it: the work its Write stream does
per chunk besides what the bare servicer does (the sha256, the file store's write with an
fsync every 8 MiB), and the S3 calls its S3 store makes, by hand against the same moto
server, once as the store makes them and once as boto3's ``upload_fileobj`` does.
``bench._artifacts_targets`` sets them beside the rows.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench._artifacts_passes import back_free_memory
from bench._artifacts_report import ArtifactBlock
from bench._cpu import cpu_seconds
from core.objects._file import FileObjectStore

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = ["file_blocks", "s3_blocks"]

_MIB = 1024 * 1024
_CHUNK = _MIB
_PART = 8 * _MIB
"""The S3 store's part size and the file store's fsync step (their default, 8 MiB)."""


def _measure(
    key: str, label: str, size: int, run: Callable[[], None], s3_pid: int | None = None
) -> ArtifactBlock:
    me = os.getpid()
    begin, s3_begin = cpu_seconds(me), cpu_seconds(s3_pid) if s3_pid else None
    clock = time.perf_counter()
    run()
    seconds = time.perf_counter() - clock
    end, s3_end = cpu_seconds(me), cpu_seconds(s3_pid) if s3_pid else None
    mib = size / _MIB
    client = None if begin is None or end is None else (end - begin) * 1000 / mib
    s3 = None if s3_begin is None or s3_end is None else (s3_end - s3_begin) * 1000 / mib
    return ArtifactBlock(key, label, seconds, size, client, s3)


def file_blocks(workdir: Path, size: int) -> list[ArtifactBlock]:
    """sha256 of 1 MiB pieces; the file store's writer; both one after the other, per
    chunk, as the API server's IO thread does them."""
    piece = os.urandom(_CHUNK)
    count = size // _CHUNK
    store = FileObjectStore(workdir / "blocks", checkpoint_bytes=_PART)
    scratch = workdir / "scratch.bin"

    def hash_only() -> None:
        digest = hashlib.sha256()
        for _ in range(count):
            digest.update(piece)

    def write(hashing: bool) -> Callable[[], None]:
        def run() -> None:
            key = "bench/blocks"
            store.begin_upload(key)
            writer = store.open_writer(key, 0, "")
            digest = hashlib.sha256()
            for _ in range(count):
                if hashing:
                    digest.update(piece)
                writer.write(piece)
            writer.finish()
            store.delete(key)

        return run

    blocks = [_measure("sha256", "sha256 (hashlib), 1 MiB updates", size, hash_only)]
    back_free_memory(scratch, size)
    blocks.append(
        _measure(
            "store_write",
            "file store writer: 1 MiB writes, fsync every 8 MiB, finish",
            size,
            write(False),
        )
    )
    os.sync()
    back_free_memory(scratch, size)
    blocks.append(
        _measure(
            "hash_and_write",
            "both per chunk, one after the other (the API server's IO step)",
            size,
            write(True),
        )
    )
    os.sync()
    return blocks


class _ByHand:
    """One multipart upload by hand: sequential 8 MiB parts of ``bytes``, as the S3 store
    uploads them, with or without a declared CRC32 checksum."""

    def __init__(self, client: S3Client, bucket: str, key: str, *, crc32: bool) -> None:
        self._client, self._bucket, self._key, self._crc32 = client, bucket, key, crc32
        self._parts: list[CompletedPartTypeDef] = []
        if crc32:
            answer = client.create_multipart_upload(
                Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32"
            )
        else:
            answer = client.create_multipart_upload(Bucket=bucket, Key=key)
        self._upload_id = answer["UploadId"]

    def upload_parts(self, source: Path) -> None:
        with source.open("rb") as handle:
            while data := handle.read(_PART):
                number = len(self._parts) + 1
                bucket, key, upload_id = self._bucket, self._key, self._upload_id
                if self._crc32:
                    answer = self._client.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                        ChecksumAlgorithm="CRC32",
                    )
                    self._parts.append(
                        {
                            "PartNumber": number,
                            "ETag": answer["ETag"],
                            "ChecksumCRC32": answer["ChecksumCRC32"],
                        }
                    )
                else:
                    answer = self._client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                    )
                    self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def complete(self) -> None:
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._client.delete_object(Bucket=self._bucket, Key=self._key)


def s3_blocks(
    client: S3Client, bucket: str, s3_pid: int, source: Path, size: int
) -> list[ArtifactBlock]:
    """A multipart upload by hand as the S3 store makes it, without and with a declared
    CRC32 checksum (upload_fileobj declares one); the parts and the completion apart."""
    blocks: list[ArtifactBlock] = []
    for variant, crc32 in (("plain", False), ("crc32", True)):
        upload = _ByHand(client, bucket, f"blocks/{variant}", crc32=crc32)
        declared = "ChecksumAlgorithm=CRC32" if crc32 else "no checksum algorithm"
        blocks += [
            _measure(
                f"s3_parts_{variant}",
                f"S3 by hand, {declared}: sequential 8 MiB UploadPart of bytes",
                size,
                functools.partial(upload.upload_parts, source),
                s3_pid,
            ),
            _measure(
                f"s3_complete_{variant}",
                f"S3 by hand, {declared}: CompleteMultipartUpload (and the delete)",
                size,
                upload.complete,
                s3_pid,
            ),
        ]
    return blocks
