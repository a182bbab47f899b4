"""Configuration from the environment: the parsing every process shares.

Each process reads its variables once, at start-up, into a frozen dataclass; a bad value
raises ``ConfigError`` naming the variable, and the process stops with that message.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "DEFAULT_DATABASE_URL",
    "ConfigError",
    "env_bool",
    "env_float",
    "env_int",
    "env_positive",
]

DEFAULT_DATABASE_URL = "sqlite:///var/agentic.db"


class ConfigError(ValueError):
    """An environment variable has a value the process cannot use."""


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    """The integer in ``name`` (``default`` when unset), at least ``minimum``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    """The non-negative number in ``name`` (``default`` when unset)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={value} must be >= 0")
    return value


def env_positive(env: Mapping[str, str], name: str, default: float) -> float:
    """The positive number in ``name`` (``default`` when unset)."""
    value = env_float(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name}={value} must be > 0")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """The boolean in ``name`` (true/false, 1/0, yes/no, on/off; ``default`` when unset)."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (true/false)")
