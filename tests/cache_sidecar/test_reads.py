"""Most-read counting (cache_sidecar._reads) and the warm policy field, as plain units.

The reference is an exact count of the same reads (collections.Counter), which the
bounded structure must agree with on the top keys.
"""

from __future__ import annotations

import collections
import random
import tomllib
from pathlib import Path

import pytest

from cache_sidecar._config import DEFAULT_POLICY_FILE
from cache_sidecar._policy import PolicyError, WarmPolicy, load_policy, parse_policy
from cache_sidecar._reads import MAX_TRACKED_KEY_BYTES, ReadCounter, SpaceSaving


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_top_keys_match_an_exact_count_on_a_skewed_stream() -> None:
    rng = random.Random(7)
    # A Zipf-like stream over 5,000 keys: the head is what a most-read policy warms.
    keys = [f"p-{i}".encode() for i in range(5000)]
    weights = [1.0 / (rank + 1) ** 1.2 for rank in range(len(keys))]
    stream = rng.choices(keys, weights, k=40_000)
    counter = ReadCounter(10, 3600, clock=Clock())
    for key in stream:
        counter.record(key)
    exact = collections.Counter(stream)
    expected = [key for key, _ in sorted(exact.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
    assert counter.top() == expected


def test_memory_stays_bounded_whatever_the_key_count() -> None:
    saving = SpaceSaving(64)
    for i in range(100_000):
        saving.add(f"k{i}".encode())
    assert len(saving) == 64
    counter = ReadCounter(5, 600, clock=Clock())
    for i in range(50_000):
        counter.record(f"k{i}".encode())
    assert len(counter.top()) == 5


def test_reads_leave_the_window_and_order_is_most_read_first() -> None:
    clock = Clock()
    counter = ReadCounter(3, 600, clock=clock)  # 12 buckets of 50 s
    for _ in range(5):
        counter.record(b"old")
    clock.now += 300
    for key, times in ((b"a", 3), (b"b", 4), (b"c", 1)):
        for _ in range(times):
            counter.record(key)
    assert counter.top() == [b"old", b"b", b"a"]
    clock.now += 400  # "old" is now 700 s back, past the 600 s window; the rest 400 s
    assert counter.top() == [b"b", b"a", b"c"]
    clock.now += 700
    assert counter.top() == []


def test_ties_are_ordered_by_key_and_long_keys_are_not_counted() -> None:
    counter = ReadCounter(10, 60, clock=Clock())
    for key in (b"z", b"y", b"x"):
        counter.record(key)
    counter.record(b"L" * (MAX_TRACKED_KEY_BYTES + 1))
    assert counter.top() == [b"x", b"y", b"z"]


def test_shipped_policy_warms_rule_sets_all_and_projects_most_read() -> None:
    policy = load_policy(DEFAULT_POLICY_FILE)
    assert policy.namespaces["rule_sets"].warm == WarmPolicy()
    assert policy.namespaces["projects"].warm == WarmPolicy(most_read=100, window_seconds=3600)
    assert policy.namespaces["projects"].warm.describe() == "most_read:100/3600s"
    assert policy.namespaces["rule_sets"].warm.describe() == "all"
    assert policy.namespaces["artifacts"].warm is None


@pytest.mark.parametrize(
    ("warm", "where"),
    [
        ('"some"', "namespaces.a.warm"),
        ("3", "namespaces.a.warm"),
        ("{ most_read = 5 }", "namespaces.a.warm.window_seconds"),
        ("{ window_seconds = 600 }", "namespaces.a.warm.most_read"),
        ("{ most_read = 0, window_seconds = 600 }", "namespaces.a.warm.most_read"),
        ("{ most_read = 10001, window_seconds = 600 }", "namespaces.a.warm.most_read"),
        ("{ most_read = 5, window_seconds = 59 }", "namespaces.a.warm.window_seconds"),
        ("{ most_read = true, window_seconds = 600 }", "namespaces.a.warm.most_read"),
        ("{ most_read = 5, window_seconds = 600, top = 1 }", "namespaces.a.warm.top"),
    ],
)
def test_bad_warm_policies_are_refused_naming_the_field(
    tmp_path: Path, warm: str, where: str
) -> None:
    data = tomllib.loads(f"[defaults]\nttl_seconds = 5\n[namespaces.a]\nwarm = {warm}\n")
    with pytest.raises(PolicyError) as raised:
        parse_policy(data, source="p.toml")
    assert f"policy file p.toml: {where}:" in str(raised.value)


def test_warm_is_not_a_default() -> None:
    data = {"defaults": {"ttl_seconds": 5, "warm": "all"}, "namespaces": {"a": {}}}
    with pytest.raises(PolicyError, match=r"defaults\.warm: unknown field"):
        parse_policy(data)
