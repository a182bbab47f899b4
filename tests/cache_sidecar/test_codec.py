"""Stored items: tagged, compressed only when that makes them smaller."""

from __future__ import annotations

import os

import pytest

from cache_sidecar._codec import (
    CodecError,
    EntryKind,
    decode,
    encode_lease,
    encode_negative,
    encode_value,
)


def test_small_values_are_stored_as_is() -> None:
    item = encode_value(b"a" * 100, compress_threshold_bytes=1024)
    assert item == b"V" + b"a" * 100
    assert decode(item).payload == b"a" * 100


def test_large_compressible_values_are_compressed() -> None:
    value = b"project " * 1000
    item = encode_value(value, compress_threshold_bytes=1024)
    assert item[:1] == b"Z"
    assert len(item) < len(value) // 10
    entry = decode(item)
    assert (entry.kind, entry.payload) == (EntryKind.VALUE, value)


def test_incompressible_values_stay_uncompressed() -> None:
    value = os.urandom(4096)  # zlib makes random bytes slightly larger
    item = encode_value(value, compress_threshold_bytes=1024)
    assert item == b"V" + value
    assert decode(item).payload == value


def test_threshold_is_inclusive_and_zero_means_always_try() -> None:
    value = b"b" * 1024
    assert encode_value(value, compress_threshold_bytes=1024)[:1] == b"Z"
    assert encode_value(value, compress_threshold_bytes=1025)[:1] == b"V"
    assert encode_value(b"", compress_threshold_bytes=0) == b"V"  # nothing to gain


def test_empty_value_negative_and_lease_round_trip() -> None:
    assert decode(encode_value(b"", 1024)).payload == b""
    assert decode(encode_value(b"", 1024)).kind is EntryKind.VALUE
    assert decode(encode_negative()).kind is EntryKind.NEGATIVE
    lease = decode(encode_lease(b"nonce-123"))
    assert (lease.kind, lease.payload) == (EntryKind.LEASE, b"nonce-123")


@pytest.mark.parametrize("item", [b"", b"?junk", b"Znot zlib", b"L", b"Nextra"], ids=repr)
def test_foreign_items_are_rejected(item: bytes) -> None:
    with pytest.raises(CodecError):
        decode(item)
