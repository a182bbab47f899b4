"""Object storage for artifact bytes: one contract (``ObjectStore``), two backends.

``open_store(url)`` picks the backend from ``AGENTIC_OBJECT_STORE_URL``: ``file:///path``
(a directory; the default) or ``s3://bucket/prefix`` (boto3; endpoint, region and
credentials from the usual AWS variables). ``fetch`` is how a worker reads an artifact by
reference: streamed to a local file, its sha256 verified before anyone uses it
(``CheckAhead``: beside its first use, for a reader that publishes nothing before).
"""

from core.objects._check_ahead import CheckAhead, CheckStopped
from core.objects._fetch import IntegrityError, fetch, sha256_of
from core.objects._file import fsync_directory
from core.objects._open import open_store
from core.objects._store import (
    KEY_PATTERN,
    MAX_READ_CHUNK_BYTES,
    Checkpoint,
    ObjectMissingError,
    ObjectStore,
    ObjectStoreError,
    StagingLostError,
    UploadWriter,
    check_key,
    object_key,
)

__all__ = [
    "KEY_PATTERN",
    "MAX_READ_CHUNK_BYTES",
    "CheckAhead",
    "CheckStopped",
    "Checkpoint",
    "IntegrityError",
    "ObjectMissingError",
    "ObjectStore",
    "ObjectStoreError",
    "StagingLostError",
    "UploadWriter",
    "check_key",
    "fetch",
    "fsync_directory",
    "object_key",
    "open_store",
    "sha256_of",
]
