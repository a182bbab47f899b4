"""Key derivation: any caller bytes become a legal, distinct Memcached key."""

from __future__ import annotations

import pytest

from cache_sidecar._keys import (
    MEMCACHED_MAX_KEY_BYTES,
    data_key,
    generation_key,
    key_token,
    token_budget,
)

PREFIX = "agentic"
NAMESPACE = "projects"
BUDGET = token_budget(PREFIX, NAMESPACE)
HUGE_GENERATION = 2**64 - 1  # the largest value memcached's incr can reach

AWKWARD_KEYS = [
    b"with space",
    b"crlf\r\ninjected",
    b"tab\tand\x00nul",
    b"\x01\x02\x7f",
    "ключ-日本".encode(),
    b"#looks-hashed",
    b"k" * 10 * 1024,
    b"\xff\xfe",
]


def _is_legal(key: str) -> bool:
    raw = key.encode("ascii")
    return len(raw) <= MEMCACHED_MAX_KEY_BYTES and all(0x21 <= b <= 0x7E for b in raw)


def test_safe_short_keys_are_kept_readable() -> None:
    assert key_token(b"6f1c2d3e-uuid", BUDGET) == "6f1c2d3e-uuid"
    assert key_token(b"a:b/c=d", BUDGET) == "a:b/c=d"


@pytest.mark.parametrize("key", AWKWARD_KEYS, ids=repr)
def test_awkward_keys_are_hashed_into_legal_keys(key: bytes) -> None:
    token = key_token(key, BUDGET)
    assert token.startswith("#")
    assert len(token) == 44  # '#' + unpadded url-safe base64 of 32 bytes
    assert _is_legal(data_key(PREFIX, NAMESPACE, HUGE_GENERATION, token))


def test_length_limit_is_exact() -> None:
    fits = b"a" * BUDGET
    assert key_token(fits, BUDGET) == fits.decode()
    assert key_token(fits + b"a", BUDGET).startswith("#")
    longest = data_key(PREFIX, NAMESPACE, HUGE_GENERATION, key_token(fits, BUDGET))
    assert len(longest) == MEMCACHED_MAX_KEY_BYTES


def test_worst_case_prefix_and_namespace_still_fit() -> None:
    prefix, namespace = "p" * 32, "n" * 63
    budget = token_budget(prefix, namespace)
    for key in [b"x" * budget, b"y" * (budget + 1), *AWKWARD_KEYS]:
        assert _is_legal(data_key(prefix, namespace, HUGE_GENERATION, key_token(key, budget)))


def test_distinct_keys_stay_distinct() -> None:
    keys = [*AWKWARD_KEYS, b"k" * (10 * 1024 - 1), b"with_space", b"plain", b"Plain"]
    # A raw key spelled exactly like another key's hash must not collide with it.
    keys.append(key_token(b"with space", BUDGET).encode())
    tokens = [key_token(k, BUDGET) for k in keys]
    assert len(set(tokens)) == len(keys)


def test_generation_counter_key_never_equals_a_data_key() -> None:
    gen_key = generation_key(PREFIX, NAMESPACE)
    assert gen_key == "agentic:projects:gen"
    # Data keys have a numeric third segment; "gen" is not numeric.
    assert gen_key != data_key(PREFIX, NAMESPACE, 0, "")[:-1]
    assert not gen_key.split(":")[2].isdigit()
