"""The S3 side of the artifact rows: a private moto S3 server with the benchmark's bucket.

moto's standalone server (``devtools.s3.S3Server``) on a free loopback port, the bucket
created before the API server that uses it starts. ``s3_target`` yields what the rows
need: the AWS environment of a process pointed at it, its pid, and a boto3 client.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

__all__ = ["BUCKET", "PREFIX", "S3Target", "s3_target"]

BUCKET = "bench"
PREFIX = "artifacts"
_START_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class S3Target:
    """A running S3 server with the benchmark's bucket."""

    env: dict[str, str]
    """AWS_* variables that point a process (boto3 in it) at the server."""
    pid: int
    client: S3Client
    """A boto3 client of the benchmark process, default configuration."""

    @property
    def store_url(self) -> str:
        """``AGENTIC_OBJECT_STORE_URL`` of an API server storing in the bucket."""
        return f"s3://{BUCKET}/{PREFIX}"


@contextmanager
def s3_target(log_path: Path) -> Iterator[S3Target]:
    """Start moto's S3 server, create the bucket; kill the server afterwards (it holds
    everything in memory: nothing is left behind)."""
    # Imported here: the S3 rows are optional, and boto3 costs the rest nothing.
    from devtools.s3 import S3Server

    server = S3Server(log_path=log_path)
    server.start(timeout_seconds=_START_TIMEOUT_SECONDS)
    try:
        server.create_bucket(BUCKET)
        pid = server.pid
        if pid is None:
            raise RuntimeError("moto's S3 server exited after it started")
        yield S3Target(env=server.env(), pid=pid, client=server.client())
    finally:
        server.stop()
