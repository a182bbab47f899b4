"""The typed async client of the cache sidecar (see ``core.cache._client``)."""

from core.cache._client import (
    CHANNEL_OPTIONS,
    CacheClient,
    CacheClientError,
    CacheRead,
    CacheRejected,
    CacheUnavailable,
    FillResult,
    Invalidation,
    Outcome,
    Warmed,
)
from core.cache._namespaces import Namespace

__all__ = [
    "CHANNEL_OPTIONS",
    "CacheClient",
    "CacheClientError",
    "CacheRead",
    "CacheRejected",
    "CacheUnavailable",
    "FillResult",
    "Invalidation",
    "Namespace",
    "Outcome",
    "Warmed",
]
