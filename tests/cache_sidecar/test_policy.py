"""Policy loading: the shipped file, merging, event rules, and refusals of bad files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cache_sidecar._config import DEFAULT_POLICY_FILE
from cache_sidecar._policy import Invalidation, PolicyError, load_policy, topic_matches

GOOD = """
key_prefix = "svc"
[defaults]
ttl_seconds = 100
lease_ttl_seconds = 4

[namespaces.a]
ttl_jitter_fraction = 0.2
invalidate_keys_on = { "thing.updated" = "thing_id" }

[namespaces.b]
ttl_seconds = 7
invalidate_namespace_on = ["thing.#"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_shipped_policy_loads_with_every_namespace_the_server_reads() -> None:
    policy = load_policy(DEFAULT_POLICY_FILE)
    assert set(policy.namespaces) == {
        "projects",
        "project_lists",
        "artifacts",
        "rule_sets",
        "sessions",
    }
    assert policy.invalidations_for("rule_set.updated") == [
        Invalidation("rule_sets", "rule_set_id")
    ]
    assert policy.invalidations_for("project.updated") == [
        Invalidation("project_lists", None),
        Invalidation("projects", "project_id"),
    ]
    assert policy.invalidations_for("project.created") == [
        Invalidation("project_lists", None),
        Invalidation("projects", "project_id"),
    ]
    assert policy.invalidations_for("artifact.updated") == [
        Invalidation("artifacts", "artifact_id")
    ]
    assert policy.invalidations_for("task.updated") == []
    assert sorted(policy.event_patterns()) == ["artifact.*", "project.*", "rule_set.*"]
    projects = policy.namespaces["projects"]
    assert projects.compress_threshold_bytes == 1024
    assert projects.lease_wait_seconds <= projects.lease_ttl_seconds


def test_defaults_merge_under_namespace_values(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, GOOD))
    a, b = policy.namespaces["a"], policy.namespaces["b"]
    assert policy.key_prefix == "svc"
    assert (a.ttl_seconds, a.lease_ttl_seconds, a.ttl_jitter_fraction) == (100, 4, 0.2)
    assert (b.ttl_seconds, b.lease_ttl_seconds) == (7, 4)
    assert b.compress_threshold_bytes == 1024  # built-in default
    assert policy.invalidations_for("thing.updated") == [
        Invalidation("b", None),
        Invalidation("a", "thing_id"),
    ]
    assert policy.invalidations_for("thing") == [Invalidation("b", None)]


def test_jitter_only_shortens_and_stays_within_the_fraction(tmp_path: Path) -> None:
    a = load_policy(write(tmp_path, GOOD)).namespaces["a"]
    rng = random.Random(7)
    samples = {a.value_expire_seconds(rng) for _ in range(2000)}
    assert min(samples) >= 80
    assert max(samples) <= 100
    assert len(samples) > 10  # actually spread


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("project.updated", "project.updated", True),
        ("project.updated", "project.deleted", False),
        ("project.*", "project.deleted", True),
        ("project.*", "project", False),
        ("project.*", "project.a.b", False),
        ("project.#", "project", True),
        ("project.#", "project.a.b", True),
        ("#", "anything.at.all", True),
        ("*.updated", "task.updated", True),
    ],
)
def test_topic_patterns(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


NS = "[namespaces.projects]\n"
BAD_POLICIES = {
    "unknown namespace field": (
        NS + "ttl_seconds = 5\nttl_secs = 5",
        "namespaces.projects.ttl_secs",
    ),
    "ttl as string": (NS + 'ttl_seconds = "300"', "namespaces.projects.ttl_seconds"),
    "ttl zero": (NS + "ttl_seconds = 0", "namespaces.projects.ttl_seconds"),
    "ttl boolean": (NS + "ttl_seconds = true", "namespaces.projects.ttl_seconds"),
    "ttl over 30 days": (NS + "ttl_seconds = 2592001", "namespaces.projects.ttl_seconds"),
    "ttl missing": (NS + "max_value_bytes = 10", "namespaces.projects.ttl_seconds: required"),
    "jitter too big": (
        NS + "ttl_seconds = 5\nttl_jitter_fraction = 1.5",
        "namespaces.projects.ttl_jitter_fraction",
    ),
    "wait beyond lease": (
        NS + "ttl_seconds = 5\nlease_ttl_seconds = 2\nlease_wait_seconds = 3.0",
        "namespaces.projects.lease_wait_seconds",
    ),
    "zero wait": (
        NS + "ttl_seconds = 5\nlease_wait_seconds = 0",
        "namespaces.projects.lease_wait_seconds",
    ),
    "value cap over memcached item": (
        NS + "ttl_seconds = 5\nmax_value_bytes = 2000000",
        "namespaces.projects.max_value_bytes",
    ),
    "negative threshold": (
        NS + "ttl_seconds = 5\ncompress_threshold_bytes = -1",
        "namespaces.projects.compress_threshold_bytes",
    ),
    "bad namespace name": ("[namespaces.Projects]\nttl_seconds = 5", "namespaces.Projects"),
    "bad event pattern": (
        NS + 'ttl_seconds = 5\ninvalidate_keys_on = { "project..updated" = "project_id" }',
        "namespaces.projects.invalidate_keys_on",
    ),
    "bad key field": (
        NS + 'ttl_seconds = 5\ninvalidate_keys_on = { "project.updated" = 3 }',
        'namespaces.projects.invalidate_keys_on."project.updated"',
    ),
    "namespace rules not a list": (
        NS + 'ttl_seconds = 5\ninvalidate_namespace_on = "project.*"',
        "namespaces.projects.invalidate_namespace_on",
    ),
    "no namespaces": ("key_prefix = 'x'", "namespaces: must be a table"),
    "unknown top-level": ("ttl_seconds = 5\n" + NS + "ttl_seconds = 5", "ttl_seconds: unknown"),
    "unknown default": ("[defaults]\nttl = 5\n" + NS + "ttl_seconds = 5", "defaults.ttl"),
    "bad prefix": ('key_prefix = "a b"\n' + NS + "ttl_seconds = 5", "key_prefix"),
    "not toml": ("[namespaces.projects\n", "not valid TOML"),
}


@pytest.mark.parametrize(("text", "where"), BAD_POLICIES.values(), ids=BAD_POLICIES.keys())
def test_bad_policies_are_refused_with_a_precise_message(
    tmp_path: Path, text: str, where: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert where in message
    assert str(path) in message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.toml")
