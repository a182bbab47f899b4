"""Pick the object-store backend from its URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from core.objects._file import FileObjectStore
from core.objects._store import ObjectStore

__all__ = ["open_store"]


def open_store(url: str, *, part_bytes: int | None = None) -> ObjectStore:
    """The store at ``url``: ``file:///abs/path``, ``file:relative/path`` or ``s3://bucket/prefix``.

    ``part_bytes`` is the checkpoint step: the S3 multipart part size, or how many bytes
    the file store writes between fsyncs. ValueError for any other scheme.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URLs name a local path, not host {parts.netloc!r}: {url}")
        path = Path(unquote(parts.path))
        root = path if path.is_absolute() else Path.cwd() / path
        if part_bytes is None:
            return FileObjectStore(root)
        return FileObjectStore(root, checkpoint_bytes=part_bytes)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"an s3 URL names a bucket: s3://bucket/prefix, not {url}")
        # boto3 is imported only by processes that use S3: it costs a worker's start-up.
        from core.objects._s3 import S3ObjectStore

        return S3ObjectStore(parts.netloc, parts.path.strip("/"), part_bytes=part_bytes)
    raise ValueError(f"object store URL must be file:// or s3://, not {url!r}")
