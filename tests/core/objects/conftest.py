"""The object stores under test, each fresh per test behind one ``Backend`` handle.

``backend`` runs a test once per store: the file store in a temporary directory, and the S3
store in a new bucket of one moto server process (``devtools.s3``) shared by the session.
Both checkpoint in small steps so that a test crosses several: 64 KiB between the file
store's fsyncs, and S3's smallest part, 5 MiB.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from core.objects import ObjectStore
from core.objects._file import FileObjectStore
from core.objects._s3 import MIN_PART_BYTES, S3ObjectStore
from devtools.s3 import S3Server

FILE_STEP_BYTES = 64 * 1024
S3_PREFIX = "artifacts"


@dataclass
class Backend:
    """A fresh, empty store, and views of its storage that bypass the store."""

    name: str
    store: ObjectStore
    step: int
    """Bytes between the writer's own checkpoints (the fsync step, the S3 part size)."""
    reopen: Callable[[], ObjectStore]
    """Another instance on the same storage, as another process would open it."""
    staged: Callable[[], list[str]]
    """What staging holds: staged files; S3 multipart uploads and tail objects."""
    stored: Callable[[], list[str]]
    """The keys of the finished objects."""
    tamper: Callable[[str, bytes], None]
    """Replace an object's bytes behind the store's back."""


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server for the session (each test gets its own bucket)."""
    server = S3Server(log_path=tmp_path_factory.mktemp("s3") / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_session(s3_server: S3Server) -> boto3.session.Session:
    """One boto3 session for the stores of every test: a client from a fresh session
    costs 0.1-0.2 s (it loads the S3 service model), from a used one 10 ms."""
    env = s3_server.env()
    return boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def _file_backend(root: Path) -> Backend:
    def files(under: Path) -> list[str]:
        return sorted(str(p.relative_to(under)) for p in under.rglob("*") if p.is_file())

    def stored() -> list[str]:
        return [name for name in files(root) if not name.startswith(".staging/")]

    def tamper(key: str, data: bytes) -> None:
        (root / key).write_bytes(data)

    def reopen() -> ObjectStore:
        return FileObjectStore(root, checkpoint_bytes=FILE_STEP_BYTES)

    return Backend(
        name="file",
        store=reopen(),
        step=FILE_STEP_BYTES,
        reopen=reopen,
        staged=lambda: files(root / ".staging") if (root / ".staging").exists() else [],
        stored=stored,
        tamper=tamper,
    )


@pytest.fixture(params=["file", "s3"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    """Each store, empty."""
    if request.param == "file":
        yield _file_backend(tmp_path / "objects")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    session: boto3.session.Session = request.getfixturevalue("s3_session")
    # The endpoint comes from the environment, as in production.
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint_url)
    bucket = f"objects-{uuid.uuid4().hex[:16]}"
    server.create_bucket(bucket)
    inspect = server.client()
    opened: list[S3ObjectStore] = []

    def reopen() -> ObjectStore:
        store = S3ObjectStore(bucket, S3_PREFIX, part_bytes=MIN_PART_BYTES, session=session)
        opened.append(store)
        return store

    def names() -> list[str]:
        pages = inspect.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def staged() -> list[str]:
        uploads = inspect.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        tails = [name for name in names() if name.startswith(f"{S3_PREFIX}/.staging/")]
        return sorted(f"upload of {upload['Key']}" for upload in uploads) + tails

    def stored() -> list[str]:
        ours = [name.removeprefix(f"{S3_PREFIX}/") for name in names()]
        return [name for name in ours if not name.startswith(".staging/")]

    def tamper(key: str, data: bytes) -> None:
        inspect.put_object(Bucket=bucket, Key=f"{S3_PREFIX}/{key}", Body=data)

    try:
        yield Backend("s3", reopen(), MIN_PART_BYTES, reopen, staged, stored, tamper)
    finally:
        for store in opened:
            store.client.close()
