"""Cache policy per namespace, loaded once at start from a TOML file.

Callers never pass a TTL: everything about an entry's life is decided here. The file
looks like this (see ``namespaces.toml`` for the shipped one)::

    key_prefix = "agentic"             # first segment of every Memcached key

    [defaults]                         # optional; any namespace field except the rules
    ttl_seconds = 300

    [namespaces.projects]
    ttl_jitter_fraction = 0.1
    invalidate_keys_on = { "project.updated" = "project_id" }

    [namespaces.project_lists]
    invalidate_namespace_on = ["project.*"]

    [namespaces.rule_sets]
    warm = "all"                       # a cache_warm task loads every key the origin has

    [namespaces.projects]
    warm = { most_read = 100, window_seconds = 3600 }   # the 100 keys read most in 1 h

Event patterns use AMQP topic syntax (``*`` is one dot-separated word, ``#`` zero or
more), so the same strings serve as queue binding keys. Any mistake (unknown field,
wrong type, out of range) raises PolicyError naming the file, namespace and field: a
sidecar with a bad policy refuses to start rather than cache with surprising TTLs.
"""

from __future__ import annotations

import math
import random
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.cache import Namespace
from core.events import EventType

__all__ = [
    "MAX_WARM_MOST_READ",
    "Invalidation",
    "NamespacePolicy",
    "Policy",
    "PolicyError",
    "WarmPolicy",
    "check_against_contract",
    "load_policy",
    "parse_policy",
    "topic_matches",
]

NAMESPACE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
"""Namespace names; the proto enforces the same rule on requests."""
_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_TOPIC_WORD = re.compile(r"^(?:[A-Za-z0-9_-]+|\*|#)$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

# Memcached reads an expiry above 30 days as an absolute Unix time.
MAX_TTL_SECONDS = 30 * 24 * 3600
# Memcached's default item size limit is 1 MiB including key and item header; leave room.
MAX_VALUE_BYTES_LIMIT = 1_000_000

_BUILTIN_DEFAULTS: dict[str, Any] = {
    "ttl_jitter_fraction": 0.1,
    "negative_ttl_seconds": 30,
    "lease_ttl_seconds": 10,
    "lease_wait_seconds": 2.0,
    "compress_threshold_bytes": 1024,
    "max_value_bytes": 512 * 1024,
}
_POLICY_FIELDS = frozenset({"ttl_seconds", *_BUILTIN_DEFAULTS})
_RULE_FIELDS = frozenset({"invalidate_keys_on", "invalidate_namespace_on", "warm"})
MAX_WARM_MOST_READ = 10_000
"""Largest N of a most-read warm policy (GetWarmPlan answers at most N keys)."""
MAX_WARM_WINDOW_SECONDS = 7 * 24 * 3600


class PolicyError(ValueError):
    """The policy file is missing, not TOML, or breaks a rule; the message names where."""


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What one domain event invalidates in one namespace.

    ``key_field`` names the event field holding the key; None means the whole namespace.
    """

    namespace: str
    key_field: str | None


@dataclass(frozen=True, slots=True)
class WarmPolicy:
    """What a cache_warm task loads into a namespace after it was cleared or a node came
    back empty: every key of the origin (``most_read`` None), or the ``most_read`` keys
    read most in the last ``window_seconds``."""

    most_read: int | None = None
    window_seconds: int = 0

    def describe(self) -> str:
        """The policy as a warming task reports it: ``all`` or ``most_read:<N>/<W>s``."""
        if self.most_read is None:
            return "all"
        return f"most_read:{self.most_read}/{self.window_seconds}s"


@dataclass(frozen=True, slots=True)
class NamespacePolicy:
    """How entries of one namespace are cached and invalidated."""

    name: str
    ttl_seconds: int
    """Upper bound on a value's life in the cache."""
    ttl_jitter_fraction: float
    """Each value lives ttl_seconds shortened by up to this fraction, so entries filled
    together do not all expire (and reload) together."""
    negative_ttl_seconds: int
    """Life of a cached "origin says not found"."""
    lease_ttl_seconds: int
    """Life of a lease: if its loader never fills, others may load after this."""
    lease_wait_seconds: float
    """How long a reader waits for another reader's fill before loading itself."""
    compress_threshold_bytes: int
    """Values at least this large are zlib-compressed when that makes them smaller."""
    max_value_bytes: int
    """Largest value Fill accepts; larger ones are INVALID_ARGUMENT."""
    key_rules: tuple[tuple[str, str], ...]
    """(event pattern, key field) pairs: such an event invalidates one key."""
    namespace_rules: tuple[str, ...]
    """Event patterns that invalidate the whole namespace."""
    warm: WarmPolicy | None = None
    """What cache warming loads; None: the namespace is not warmed."""

    def value_expire_seconds(self, rng: random.Random) -> int:
        """Return the Memcached expiry of a value: the TTL minus a random jitter."""
        return _jittered(self.ttl_seconds, self.ttl_jitter_fraction, rng)

    def negative_expire_seconds(self, rng: random.Random) -> int:
        """Return the Memcached expiry of a negative entry."""
        return _jittered(self.negative_ttl_seconds, self.ttl_jitter_fraction, rng)


@dataclass(frozen=True, slots=True)
class Policy:
    """The whole policy: the key prefix and every namespace."""

    key_prefix: str
    namespaces: Mapping[str, NamespacePolicy]

    def get(self, name: str) -> NamespacePolicy | None:
        """Return the policy of a namespace, or None when it is not configured."""
        return self.namespaces.get(name)

    def event_patterns(self) -> tuple[str, ...]:
        """Return every event pattern of every rule, sorted, without duplicates."""
        patterns: set[str] = set()
        for ns in self.namespaces.values():
            patterns.update(pattern for pattern, _ in ns.key_rules)
            patterns.update(ns.namespace_rules)
        return tuple(sorted(patterns))

    def invalidations_for(self, event_type: str) -> list[Invalidation]:
        """Return what an event of this type invalidates, namespace-wide rules first."""
        found: list[Invalidation] = []
        for ns in self.namespaces.values():
            if any(topic_matches(p, event_type) for p in ns.namespace_rules):
                found.insert(0, Invalidation(ns.name, None))
                continue  # the whole namespace covers its keys too
            found.extend(
                Invalidation(ns.name, field)
                for pattern, field in ns.key_rules
                if topic_matches(pattern, event_type)
            )
        return found


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Return whether an AMQP topic pattern matches a routing key."""
    return _match(pattern.split("."), routing_key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


def _jittered(ttl: int, fraction: float, rng: random.Random) -> int:
    # Shorten only: ttl_seconds stays a hard upper bound on an entry's age.
    return max(1, ttl - math.floor(ttl * fraction * rng.random()))


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; raise PolicyError with a precise message."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"policy file {path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path}: not valid TOML: {exc}") from exc
    return parse_policy(data, source=str(path))


def parse_policy(data: Mapping[str, Any], source: str = "<policy>") -> Policy:
    """Validate parsed TOML and build the Policy; raise PolicyError naming the bad field."""

    def fail(where: str, message: str) -> PolicyError:
        return PolicyError(f"policy file {source}: {where}: {message}")

    unknown = set(data) - {"key_prefix", "defaults", "namespaces"}
    if unknown:
        raise fail(sorted(unknown)[0], "unknown top-level field")

    prefix = data.get("key_prefix", "agentic")
    if not isinstance(prefix, str) or not _PREFIX_PATTERN.fullmatch(prefix):
        raise fail("key_prefix", f"must be 1 to 32 of A-Z a-z 0-9 _ -, got {prefix!r}")

    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise fail("defaults", "must be a table")
    for name in defaults:
        if name not in _POLICY_FIELDS:
            raise fail(f"defaults.{name}", _unknown_field_message(name))

    namespaces = data.get("namespaces")
    if not isinstance(namespaces, dict) or not namespaces:
        raise fail("namespaces", "must be a table with at least one namespace")

    built: dict[str, NamespacePolicy] = {}
    for name, table in namespaces.items():
        if not NAMESPACE_PATTERN.fullmatch(name):
            raise fail(
                f"namespaces.{name}",
                "namespace names are 1 to 63 of a-z 0-9 _ starting with a letter",
            )
        if not isinstance(table, dict):
            raise fail(f"namespaces.{name}", "must be a table")
        try:
            built[name] = _namespace(name, {**_BUILTIN_DEFAULTS, **defaults}, table)
        except _FieldError as exc:
            raise fail(f"namespaces.{name}.{exc.field}", exc.message) from None
    return Policy(key_prefix=prefix, namespaces=built)


class _FieldError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _unknown_field_message(name: str) -> str:
    known = ", ".join(sorted(_POLICY_FIELDS | _RULE_FIELDS))
    return f"unknown field (known fields: {known})"


def _namespace(name: str, defaults: Mapping[str, Any], table: Mapping[str, Any]) -> NamespacePolicy:
    for field in table:
        if field not in _POLICY_FIELDS | _RULE_FIELDS:
            raise _FieldError(field, _unknown_field_message(field))
    merged = {**defaults, **table}
    if "ttl_seconds" not in merged:
        raise _FieldError("ttl_seconds", "required (here or in [defaults])")

    ttl = _int(merged, "ttl_seconds", 1, MAX_TTL_SECONDS)
    lease_ttl = _int(merged, "lease_ttl_seconds", 1, 3600)
    lease_wait = _float(merged, "lease_wait_seconds", 0.0, float(lease_ttl))
    if lease_wait <= 0:
        raise _FieldError("lease_wait_seconds", "must be greater than 0")
    jitter = _float(merged, "ttl_jitter_fraction", 0.0, 0.9)
    return NamespacePolicy(
        name=name,
        ttl_seconds=ttl,
        ttl_jitter_fraction=jitter,
        negative_ttl_seconds=_int(merged, "negative_ttl_seconds", 1, MAX_TTL_SECONDS),
        lease_ttl_seconds=lease_ttl,
        lease_wait_seconds=lease_wait,
        compress_threshold_bytes=_int(merged, "compress_threshold_bytes", 0, 2**31),
        max_value_bytes=_int(merged, "max_value_bytes", 1, MAX_VALUE_BYTES_LIMIT),
        key_rules=_key_rules(table.get("invalidate_keys_on", {})),
        namespace_rules=_namespace_rules(table.get("invalidate_namespace_on", [])),
        warm=_warm(table["warm"]) if "warm" in table else None,
    )


def _int(table: Mapping[str, Any], field: str, low: int, high: int) -> int:
    value = table[field]
    # bool is an int subclass in Python; `ttl_seconds = true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _FieldError(field, f"must be an integer from {low} to {high}, got {value!r}")
    return value


def _float(table: Mapping[str, Any], field: str, low: float, high: float) -> float:
    value = table[field]
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _FieldError(field, f"must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _pattern(field: str, pattern: Any) -> str:
    if not isinstance(pattern, str) or not all(
        _TOPIC_WORD.fullmatch(word) for word in pattern.split(".")
    ):
        raise _FieldError(
            field,
            f"event patterns are dot-separated words of A-Z a-z 0-9 _ - or * or #, got {pattern!r}",
        )
    return pattern


def _key_rules(rules: Any) -> tuple[tuple[str, str], ...]:
    field = "invalidate_keys_on"
    if not isinstance(rules, dict):
        raise _FieldError(field, 'must be a table of event pattern = "key field name"')
    out: list[tuple[str, str]] = []
    for pattern, key_field in rules.items():
        _pattern(field, pattern)
        if not isinstance(key_field, str) or not _FIELD_NAME.fullmatch(key_field):
            raise _FieldError(
                f'{field}."{pattern}"', f"must name an event field, got {key_field!r}"
            )
        out.append((pattern, key_field))
    return tuple(out)


def _namespace_rules(rules: Any) -> tuple[str, ...]:
    field = "invalidate_namespace_on"
    if not isinstance(rules, list):
        raise _FieldError(field, "must be an array of event patterns")
    return tuple(_pattern(field, pattern) for pattern in rules)


def _warm(value: Any) -> WarmPolicy:
    field = "warm"
    if value == "all":
        return WarmPolicy()
    if not isinstance(value, dict):
        raise _FieldError(
            field,
            f'must be "all" or {{ most_read = N, window_seconds = W }}, got {value!r}',
        )
    unknown = set(value) - {"most_read", "window_seconds"}
    if unknown:
        raise _FieldError(
            f"{field}.{sorted(unknown)[0]}", "unknown field (known: most_read, window_seconds)"
        )
    for name in ("most_read", "window_seconds"):
        if name not in value:
            raise _FieldError(f"{field}.{name}", "required in a most-read warm policy")
    try:
        most_read = _int(value, "most_read", 1, MAX_WARM_MOST_READ)
        window = _int(value, "window_seconds", 60, MAX_WARM_WINDOW_SECONDS)
    except _FieldError as exc:
        raise _FieldError(f"{field}.{exc.field}", exc.message) from None
    return WarmPolicy(most_read=most_read, window_seconds=window)


def check_against_contract(policy: Policy, source: str = "<policy>") -> None:
    """Raise PolicyError unless the policy serves what the API server relies on.

    Every namespace of ``core.cache.Namespace`` must be configured; every event pattern
    must match at least one ``core.events.EventType``; a key rule must name the key field
    those events carry. A misspelling in the TOML thus stops the sidecar at start-up.
    """

    def fail(where: str, message: str) -> PolicyError:
        return PolicyError(f"policy file {source}: {where}: {message}")

    missing = sorted(ns.value for ns in Namespace if policy.get(ns) is None)
    if missing:
        raise fail(
            f"namespaces.{missing[0]}", "the API server reads through it, but it is not configured"
        )
    known = ", ".join(t.value for t in EventType)
    for ns in policy.namespaces.values():
        for pattern in ns.namespace_rules:
            if not any(topic_matches(pattern, t) for t in EventType):
                raise fail(
                    f"namespaces.{ns.name}.invalidate_namespace_on",
                    f"{pattern!r} matches no domain event (there are: {known})",
                )
        for pattern, field in ns.key_rules:
            matched = [t for t in EventType if topic_matches(pattern, t)]
            if not matched:
                raise fail(
                    f"namespaces.{ns.name}.invalidate_keys_on",
                    f"{pattern!r} matches no domain event (there are: {known})",
                )
            wrong = [t.value for t in matched if t.key_field != field]
            if wrong:
                raise fail(
                    f'namespaces.{ns.name}.invalidate_keys_on."{pattern}"',
                    f"{wrong[0]} carries its key in {EventType(wrong[0]).key_field!r}, "
                    f"not {field!r}",
                )
