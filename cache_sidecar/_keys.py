"""Memcached key derivation: callers never build raw Memcached keys.

A cache entry of namespace ``ns`` and caller key ``key`` (any bytes) lives at::

    <prefix>:<ns>:<generation>:<token>

and the namespace's generation counter at ``<prefix>:<ns>:gen`` (no digits, so it can
never equal a data key). ``token`` is the caller key itself when every byte is in the
safe printable set and it fits the 250-byte Memcached limit; otherwise it is ``#``
followed by the url-safe base64 SHA-256 of the key. ``#`` is excluded from the safe set,
so a raw token can never equal a hashed one and distinct keys stay distinct (up to a
SHA-256 collision).

The token does not depend on the generation (its length budget assumes the longest
generation), so a key maps to the same Memcached node in every generation.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = [
    "MEMCACHED_MAX_KEY_BYTES",
    "data_key",
    "generation_key",
    "key_token",
    "token_budget",
]

MEMCACHED_MAX_KEY_BYTES = 250
"""Memcached's hard limit on key length (KEY_MAX_LENGTH in memcached.h)."""

# Generations are 64-bit counters (Memcached incr), at most 20 decimal digits.
_MAX_GENERATION_DIGITS = 20
_HASH_MARK = "#"
# Printable ASCII without space (0x20) and DEL; the ASCII protocol splits on spaces and
# CR/LF, and control bytes are illegal. '#' is reserved to mark hashed tokens.
_SAFE = frozenset(range(0x21, 0x7F)) - {ord(_HASH_MARK)}


def token_budget(prefix: str, namespace: str) -> int:
    """Return how many bytes a raw token may use in ``namespace`` before it is hashed."""
    header = len(prefix) + len(namespace) + _MAX_GENERATION_DIGITS + 3  # three ':' separators
    return MEMCACHED_MAX_KEY_BYTES - header


def key_token(key: bytes, budget: int) -> str:
    """Return the Memcached-safe form of a caller key: itself, or a marked SHA-256 digest."""
    if len(key) <= budget and _SAFE.issuperset(key):
        return key.decode("ascii")
    digest = hashlib.sha256(key).digest()
    return _HASH_MARK + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def data_key(prefix: str, namespace: str, generation: int, token: str) -> str:
    """Return the Memcached key of an entry in a given generation of its namespace."""
    return f"{prefix}:{namespace}:{generation}:{token}"


def generation_key(prefix: str, namespace: str) -> str:
    """Return the Memcached key of a namespace's generation counter."""
    return f"{prefix}:{namespace}:gen"
