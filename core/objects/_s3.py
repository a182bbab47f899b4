"""The ``s3://`` object store: a bucket (and key prefix) behind the S3 protocol, via boto3.

Object ``k`` is the S3 object ``<prefix>/k``. Its upload is an S3 multipart upload on that
final key, so ``complete_multipart_upload`` publishes it atomically and a partial upload is
never readable. The writer buffers in memory and uploads every ``part_bytes`` (default 8 MiB)
as the next part; a part is durable once S3 answers, so that is a checkpoint. ``state``
records ``{"upload_id", "parts": [[number, etag, size], ...], "tail"}``.

``checkpoint`` (a stream that ends unfinished) cannot make the buffered remainder a part:
S3 refuses parts under 5 MiB except the last. It PUTs it as a small staging object, the
tail, and records its length; the next writer GETs it back into its buffer. The tail's key,
``<prefix>/.staging/<key>.<upload hash>-<part count>.tail``, holds a dot, which no object key
can (``KEY_PATTERN``), and names the upload and the number of parts before it, because a
writer that died after its last recorded checkpoint may have gone on: uploaded more parts
(which a continuing writer overwrites under the same numbers, and which completion ignores
unless listed in the state) and PUT a newer tail. A newer tail after the same parts starts
with the recorded tail's bytes (a buffer only grows at its end) and is cut to the recorded
length; a tail after more parts has another key and is never read.

``finish`` uploads the buffer as the last part, completes the upload and deletes the
upload's tails. Uploads that are never finished nor aborted leave a multipart upload and
tails behind: the expiry sweep aborts them; a bucket lifecycle rule
(AbortIncompleteMultipartUpload, and expiry under ``.staging/``) is the backstop.

Every botocore error becomes an ObjectStoreError (ObjectMissingError for a missing object
or upload) whose message names the bucket and key; the botocore exception stays chained
for the log. Endpoint, region and credentials come from boto3's usual sources
(``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, config files, roles).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.objects._store import (
    MAX_READ_CHUNK_BYTES,
    Checkpoint,
    ObjectMissingError,
    ObjectStoreError,
    StagingLostError,
    check_key,
)

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = [
    "DEFAULT_PART_BYTES",
    "MIN_PART_BYTES",
    "S3ObjectStore",
    "s3_client",
    "translated_errors",
]

DEFAULT_PART_BYTES = 8 * 1024 * 1024
"""The issue's part size: 8 MiB, AWS's own default multipart chunk size."""

MIN_PART_BYTES = 5 * 1024 * 1024
"""S3's smallest part other than the last (``EntityTooSmall`` below it)."""

MAX_PARTS = 10_000
"""S3's most parts per upload: 78 GiB at 8 MiB parts, far above the largest artifact."""

# Codes S3 answers for "nothing there": a HEAD has no body, so its 404 carries no code.
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchUpload", "NotFound", "404"})

# The errors of a streaming body read: botocore wraps most urllib3 failures, not all.
_STREAM_ERRORS = (BotoCoreError, urllib3.exceptions.HTTPError, OSError)


def _error_of(exc: ClientError) -> tuple[str, str]:
    """S3's error code and message."""
    error = exc.response.get("Error", {})
    return str(error.get("Code", "")), str(error.get("Message", ""))


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Turn botocore's exceptions into the store's, with ``what`` (action, bucket, key)."""
    try:
        yield
    except ClientError as exc:
        code, message = _error_of(exc)
        code = code or "unknown error"
        detail = f"{code}: {message}" if message else code
        if code in _MISSING_CODES:
            raise ObjectMissingError(f"{what}: {detail}") from exc
        raise ObjectStoreError(f"{what}: {detail}") from exc
    except BotoCoreError as exc:  # unreachable endpoint, timeouts, no credentials
        raise ObjectStoreError(f"{what}: {exc}") from exc


class _Upload:
    """The parsed ``state`` of one multipart upload."""

    __slots__ = ("parts", "tail", "upload_id")

    def __init__(self, upload_id: str, parts: list[tuple[int, str, int]], tail: int) -> None:
        self.upload_id = upload_id
        self.parts = parts
        self.tail = tail

    @classmethod
    def parse(cls, key: str, state: str) -> _Upload:
        """The upload ``state`` describes; ObjectMissingError when it is not an S3 upload's
        (a state of another backend: nothing of it is staged here)."""
        try:
            raw = json.loads(state)
            parts = [(int(n), str(etag), int(size)) for n, etag, size in raw["parts"]]
            upload = cls(str(raw["upload_id"]), parts, int(raw["tail"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise ObjectMissingError(f"no staged S3 upload for {key}: bad state ({exc})") from None
        return upload

    def dump(self) -> str:
        """The state string to record."""
        parts = [list(part) for part in self.parts]
        return json.dumps({"upload_id": self.upload_id, "parts": parts, "tail": self.tail})

    @property
    def parts_bytes(self) -> int:
        """Bytes in the uploaded parts."""
        return sum(size for _, _, size in self.parts)


class _S3Writer:
    """Appends to one multipart upload: a part every ``part_bytes``, a tail on ``checkpoint``."""

    def __init__(
        self, store: S3ObjectStore, key: str, upload: _Upload, buffer: bytearray, part_bytes: int
    ) -> None:
        self._store = store
        self._key = key
        self._upload = upload
        self._buffer = buffer
        self._part_bytes = part_bytes
        self._spent = False

    @property
    def committed(self) -> int:
        return self._upload.parts_bytes + self._upload.tail

    @property
    def written(self) -> int:
        return self._upload.parts_bytes + len(self._buffer)

    def _check_usable(self) -> None:
        if self._spent:
            raise ValueError(f"the writer of {self._key} is finished or closed")

    def _checkpoint(self) -> Checkpoint:
        return Checkpoint(self.committed, self._upload.dump())

    def write(self, data: bytes) -> Checkpoint | None:
        self._check_usable()
        self._buffer += data
        checkpoint = None
        while len(self._buffer) >= self._part_bytes:
            with memoryview(self._buffer) as view:
                part = bytes(view[: self._part_bytes])
            self._upload_part(part)
            del self._buffer[: self._part_bytes]
            # The part holds all of the tail (a tail is shorter than a part): it is now
            # stale, and never read again since the part count in its key has moved on.
            self._upload.tail = 0
            checkpoint = self._checkpoint()
        return checkpoint

    def _upload_part(self, data: bytes) -> None:
        number = len(self._upload.parts) + 1
        if number > MAX_PARTS:
            raise ObjectStoreError(
                f"{self._store.describe(self._key)}: more than {MAX_PARTS} parts "
                f"of {self._part_bytes} bytes: the upload is too large for S3"
            )
        what = f"uploading part {number} of {self._store.describe(self._key)}"
        with translated_errors(what):
            answer = self._store.client.upload_part(
                Bucket=self._store.bucket,
                Key=self._store.name(self._key),
                UploadId=self._upload.upload_id,
                PartNumber=number,
                Body=data,
            )
        self._upload.parts.append((number, answer["ETag"], len(data)))

    def checkpoint(self) -> Checkpoint:
        self._check_usable()
        if len(self._buffer) != self._upload.tail:
            tail = self._store._tail_name(self._key, self._upload)
            with translated_errors(f"staging the tail of {self._store.describe(self._key)}"):
                self._store.client.put_object(
                    Bucket=self._store.bucket, Key=tail, Body=bytes(self._buffer)
                )
            self._upload.tail = len(self._buffer)
        return self._checkpoint()

    def finish(self) -> None:
        self._check_usable()
        store, upload = self._store, self._upload
        name = store.name(self._key)
        if not upload.parts and not self._buffer:
            # S3 cannot complete an upload of no parts; an empty object is a plain PUT.
            with translated_errors(f"writing the empty object {store.describe(self._key)}"):
                store.client.put_object(Bucket=store.bucket, Key=name, Body=b"")
            store.abort_upload(self._key, upload.dump())
            self._spent = True
            return
        if self._buffer:
            self._upload_part(bytes(self._buffer))
            self._buffer.clear()
            upload.tail = 0
        parts: list[CompletedPartTypeDef] = [
            {"PartNumber": number, "ETag": etag} for number, etag, _ in upload.parts
        ]
        try:
            with translated_errors(f"completing the upload of {store.describe(self._key)}"):
                store.client.complete_multipart_upload(
                    Bucket=store.bucket,
                    Key=name,
                    UploadId=upload.upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except ObjectMissingError:
            # botocore retries a completion whose answer was lost; the retry finds the upload
            # gone because the first attempt completed it. The object then has our size.
            if store.size(self._key) != upload.parts_bytes:
                raise
        store._delete_tails(self._key, upload)
        self._spent = True

    def close(self) -> None:
        self._buffer = bytearray()
        self._spent = True


def s3_client(
    *,
    connect_timeout_seconds: float = 5.0,
    read_timeout_seconds: float = 60.0,
    max_attempts: int = 5,
    max_pool_connections: int = 32,
    session: boto3.session.Session | None = None,
) -> S3Client:
    """An S3 client with our timeouts and retries (botocore's standard retry mode, with
    backoff); endpoint, region and credentials from boto3's usual sources. Shared by the
    object store and the backups' S3 destination, so both talk to S3 alike."""
    config = Config(
        connect_timeout=connect_timeout_seconds,
        read_timeout=read_timeout_seconds,
        retries={"mode": "standard", "max_attempts": max_attempts},
        # One connection per concurrent upload or download stream in the process.
        max_pool_connections=max_pool_connections,
    )
    # A session of our own unless given one: boto3's default session is created lazily
    # and not thread-safely. The client itself is thread-safe and shared by every writer.
    if session is None:
        session = boto3.session.Session()
    return session.client("s3", config=config)


class S3ObjectStore:
    """Objects under ``prefix`` in ``bucket``; uploads are S3 multipart uploads.

    ``part_bytes`` (default 8 MiB, at least 5 MiB) is the part size and so the checkpoint
    step; a writer holds at most one part plus one write in memory. The timeouts and
    retries apply to every request (botocore's standard retry mode, with backoff).
    ``session`` is the boto3 session the client is built from (a profile, or shared to
    build many stores cheaply); by default a new one, which reads the usual AWS variables
    and files.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        part_bytes: int | None = None,
        connect_timeout_seconds: float = 5.0,
        read_timeout_seconds: float = 60.0,
        max_attempts: int = 5,
        max_pool_connections: int = 32,
        session: boto3.session.Session | None = None,
    ) -> None:
        part_bytes = DEFAULT_PART_BYTES if part_bytes is None else part_bytes
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(
                f"S3 parts must be at least {MIN_PART_BYTES} bytes (5 MiB), not {part_bytes}"
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.part_bytes = part_bytes
        self.client: S3Client = s3_client(
            connect_timeout_seconds=connect_timeout_seconds,
            read_timeout_seconds=read_timeout_seconds,
            max_attempts=max_attempts,
            max_pool_connections=max_pool_connections,
            session=session,
        )

    def name(self, key: str) -> str:
        """The S3 object key of object ``key``."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def describe(self, key: str) -> str:
        """``s3://bucket/name`` of object ``key``, for messages."""
        return f"s3://{self.bucket}/{self.name(key)}"

    def _tails_prefix(self, key: str, upload: _Upload) -> str:
        digest = hashlib.sha256(upload.upload_id.encode()).hexdigest()[:16]
        staging = f"{self.prefix}/.staging" if self.prefix else ".staging"
        return f"{staging}/{check_key(key)}.{digest}-"

    def _tail_name(self, key: str, upload: _Upload) -> str:
        """The S3 key of the upload's tail after its current parts."""
        return f"{self._tails_prefix(key, upload)}{len(upload.parts)}.tail"

    def _delete_tails(self, key: str, upload: _Upload) -> None:
        """Delete every tail the upload has left (a dead writer's included)."""
        prefix = self._tails_prefix(key, upload)
        with translated_errors(f"deleting the staged tails of {self.describe(key)}"):
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                names = [item["Key"] for item in page.get("Contents", [])]
                if names:
                    self.client.delete_objects(
                        Bucket=self.bucket,
                        Delete={"Objects": [{"Key": name} for name in names], "Quiet": True},
                    )

    def begin_upload(self, key: str) -> str:
        """Create a multipart upload on the final key."""
        with translated_errors(f"starting an upload to {self.describe(key)}"):
            answer = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.name(key))
        return _Upload(answer["UploadId"], [], 0).dump()

    def open_writer(self, key: str, committed: int, state: str) -> _S3Writer:
        """Continue the upload: its recorded parts are checked against S3's list, its tail
        is read back into the buffer."""
        upload = _Upload.parse(key, state)
        recorded = upload.parts_bytes + upload.tail
        if committed != recorded:
            # The caller stores the committed size and the state together: a mismatch is a
            # state from another checkpoint, and which bytes are whose cannot be told.
            raise StagingLostError(
                f"{self.describe(key)}: {committed} bytes committed, but the upload state "
                f"records {recorded}"
            )
        self._check_parts(key, upload)
        buffer = bytearray()
        if upload.tail:
            buffer = self._read_tail(key, upload)
        return _S3Writer(self, key, upload, buffer, self.part_bytes)

    def _check_parts(self, key: str, upload: _Upload) -> None:
        """ObjectMissingError when the upload is gone (aborted, expired, completed);
        StagingLostError when S3 lacks a recorded part."""
        stored: dict[int, tuple[str, int]] = {}
        with translated_errors(f"listing the parts of the upload to {self.describe(key)}"):
            pages = self.client.get_paginator("list_parts")
            for page in pages.paginate(
                Bucket=self.bucket, Key=self.name(key), UploadId=upload.upload_id
            ):
                for part in page.get("Parts", []):
                    stored[part["PartNumber"]] = (part["ETag"], part["Size"])
        for number, etag, size in upload.parts:
            if stored.get(number) != (etag, size):
                raise StagingLostError(
                    f"{self.describe(key)}: part {number} ({size} bytes) of the upload is "
                    "not in S3 as recorded"
                )

    def _read_tail(self, key: str, upload: _Upload) -> bytearray:
        tail = self._tail_name(key, upload)
        what = f"reading the staged tail of {self.describe(key)}"
        try:
            with translated_errors(what):
                # Only the recorded length: a longer tail is a dead writer's later
                # checkpoint, whose extra bytes are past the committed size.
                answer = self.client.get_object(
                    Bucket=self.bucket, Key=tail, Range=f"bytes=0-{upload.tail - 1}"
                )
                body = answer["Body"]
                try:
                    data = bytearray(body.read())
                finally:
                    body.close()
        except ObjectMissingError:
            raise StagingLostError(
                f"{self.describe(key)}: the staged tail of {upload.tail} bytes is gone"
            ) from None
        if len(data) != upload.tail:
            raise StagingLostError(
                f"{self.describe(key)}: the staged tail holds {len(data)} bytes, "
                f"{upload.tail} were committed"
            )
        return data

    def abort_upload(self, key: str, state: str) -> None:
        """Abort the multipart upload (S3 drops its parts) and delete its tails."""
        try:
            upload = _Upload.parse(key, state)
        except ObjectMissingError:
            check_key(key)
            return  # not an S3 upload's state: nothing of it is staged here
        try:
            with translated_errors(f"aborting the upload to {self.describe(key)}"):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.name(key), UploadId=upload.upload_id
                )
        except ObjectMissingError:
            pass  # already aborted, expired or completed
        self._delete_tails(key, upload)

    def read(
        self, key: str, offset: int = 0, limit: int = 0, *, chunk_bytes: int = MAX_READ_CHUNK_BYTES
    ) -> Generator[bytes, None, None]:
        """A ranged GET, streamed in pieces of at most ``chunk_bytes``."""
        if offset < 0 or limit < 0 or chunk_bytes <= 0:
            raise ValueError(f"bad read: offset {offset}, limit {limit}, chunk {chunk_bytes}")
        name = self.name(key)
        byte_range = None
        if limit:
            byte_range = f"bytes={offset}-{offset + limit - 1}"
        elif offset:
            byte_range = f"bytes={offset}-"
        try:
            with translated_errors(f"reading {self.describe(key)}"):
                if byte_range is None:
                    answer = self.client.get_object(Bucket=self.bucket, Key=name)
                else:
                    answer = self.client.get_object(Bucket=self.bucket, Key=name, Range=byte_range)
        except ObjectMissingError:
            raise ObjectMissingError(f"no object {self.describe(key)}") from None
        except ObjectStoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _error_of(cause)[0] == "InvalidRange":
                return _nothing()  # at or past the end (S3 answers 416 even for 0 of 0 bytes)
            raise
        return self._pieces(key, answer["Body"], chunk_bytes)

    def _pieces(
        self, key: str, body: StreamingBody, chunk_bytes: int
    ) -> Generator[bytes, None, None]:
        try:
            yield from body.iter_chunks(chunk_bytes)
        except _STREAM_ERRORS as exc:
            raise ObjectStoreError(f"reading {self.describe(key)}: {exc}") from exc
        finally:
            body.close()

    def size(self, key: str) -> int | None:
        """HEAD the object."""
        try:
            with translated_errors(f"looking up {self.describe(key)}"):
                answer = self.client.head_object(Bucket=self.bucket, Key=self.name(key))
        except ObjectMissingError:
            return None
        return answer["ContentLength"]

    def pin(self, key: str) -> None:
        """No local file: a reader copies the object (``core.objects.fetch``)."""
        return None

    def delete(self, key: str) -> None:
        """Delete the object (S3 answers a missing one as deleted)."""
        with translated_errors(f"deleting {self.describe(key)}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.name(key))

    def check(self) -> None:
        """HEAD the bucket: the endpoint answers, the credentials are accepted, the bucket
        exists. It does not prove write permission (a write probe would leave versions
        behind in a versioned bucket at every health check)."""
        try:
            with translated_errors(f"checking bucket s3://{self.bucket}"):
                self.client.head_bucket(Bucket=self.bucket)
        except ObjectMissingError as exc:
            raise ObjectStoreError(f"bucket s3://{self.bucket} does not exist") from exc


def _nothing() -> Generator[bytes, None, None]:
    """An empty read."""
    yield from ()
