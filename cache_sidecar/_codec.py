"""The bytes stored in Memcached: a one-byte tag, then the payload.

Values are the caller's bytes (serialized protobuf), never pickled. Every item starts
with a tag that says what it is, so a lease placeholder or a cached "not found" can
never be mistaken for a value:

    b"V" + value            a value stored as is
    b"Z" + zlib(value)      a value stored compressed
    b"N"                    a negative entry: the origin said "not found"
    b"L" + nonce            a lease placeholder held by the loader with this nonce

Compression is applied only at or above the namespace's threshold and kept only when
it actually makes the item smaller (already-compressed payloads grow under zlib).
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass

__all__ = [
    "CodecError",
    "Entry",
    "EntryKind",
    "decode",
    "encode_lease",
    "encode_negative",
    "encode_value",
]

_VALUE = b"V"
_ZLIB = b"Z"
_NEGATIVE = b"N"
_LEASE = b"L"
# zlib's default level: fills are rare next to hits, and inflate speed does not depend
# on the level, so spend a little CPU once for smaller items.
_ZLIB_LEVEL = 6


class CodecError(ValueError):
    """An item in Memcached is not something this codec wrote."""


class EntryKind(enum.Enum):
    """What a Memcached item holds."""

    VALUE = "value"
    NEGATIVE = "negative"
    LEASE = "lease"


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded item: the value (kind VALUE), the lease nonce (LEASE) or nothing."""

    kind: EntryKind
    payload: bytes = b""


def encode_value(value: bytes, compress_threshold_bytes: int) -> bytes:
    """Return the stored form of a value, compressed when that makes it smaller."""
    if len(value) >= compress_threshold_bytes:
        packed = zlib.compress(value, _ZLIB_LEVEL)
        if len(packed) < len(value):
            return _ZLIB + packed
    return _VALUE + value


def encode_negative() -> bytes:
    """Return the stored form of "the origin has no such key"."""
    return _NEGATIVE


def encode_lease(nonce: bytes) -> bytes:
    """Return the stored form of a lease placeholder owned by ``nonce``."""
    return _LEASE + nonce


def decode(item: bytes) -> Entry:
    """Decode a stored item; raise CodecError when it was not written by this codec."""
    tag, payload = item[:1], item[1:]
    if tag == _VALUE:
        return Entry(EntryKind.VALUE, payload)
    if tag == _ZLIB:
        try:
            return Entry(EntryKind.VALUE, zlib.decompress(payload))
        except zlib.error as exc:
            raise CodecError(f"corrupt compressed item: {exc}") from exc
    if tag == _NEGATIVE and not payload:
        return Entry(EntryKind.NEGATIVE)
    if tag == _LEASE and payload:
        return Entry(EntryKind.LEASE, payload)
    raise CodecError(f"unknown item tag {tag!r}")
