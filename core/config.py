"""Configuration from the environment: one declarative mechanism for every process.

Each process declares its settings once, as the fields of a frozen dataclass::

    @dataclass(frozen=True, slots=True)
    class ServerConfig:
        db_pool_size: int = setting(
            "AGENTIC_DB_POOL_SIZE", 8, parse=integer(minimum=1),
            doc="database connections, and the threads that run database calls",
        )

The variable's name, its default, its unit (in the field name: ``_seconds``, ``_bytes``)
and the text a user reads are written there and nowhere else: :func:`read_env` reads every
field from the environment once, at start-up, and :func:`markdown_table` renders the README
table from the same declarations (``make docs``; ``tests/test_docs.py`` fails when the
README differs). A bad value raises :class:`ConfigError` naming the variable, and the
process stops with that message.

A renamed variable keeps its old name as a deprecated :class:`Alias` for one release: the
old name is read only when the new one is unset, and each old name that is set logs one
warning naming the new variable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, overload

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_OBJECT_STORE_URL",
    "Alias",
    "ConfigError",
    "Setting",
    "address",
    "address_list",
    "boolean",
    "integer",
    "markdown_table",
    "number",
    "path",
    "read_env",
    "setting",
    "text",
    "upper",
]

DEFAULT_DATABASE_URL = "sqlite:///var/agentic.db"
DEFAULT_OBJECT_STORE_URL = "file:var/objects"

_T = TypeVar("_T")
_C = TypeVar("_C")
_KEY = "agentic.setting"
_log = logging.getLogger(__name__)
_warned: set[str] = set()  # deprecated names already warned about in this process


class ConfigError(ValueError):
    """An environment variable has a value the process cannot use."""


@dataclass(frozen=True, slots=True)
class Alias:
    """A deprecated former name of a setting, still read for one release."""

    env: str
    """The old variable name."""
    convert: Callable[[str], str | None] = lambda raw: raw
    """Its raw value in the new variable's terms; None: this value does not set the field."""
    doc: str = ""
    """What differs from the new variable, for the README (empty: nothing)."""
    advice: str = ""
    """The warning's advice (empty: ``set <new name> instead``)."""


@dataclass(frozen=True, slots=True)
class Setting:
    """How one dataclass field is read from the environment and documented."""

    env: str
    """The environment variable."""
    parse: Callable[[str], Any]
    """Stripped, non-empty raw value to field value; ValueError(reason) when unusable."""
    doc: str
    """Meaning, in README markdown (one paragraph)."""
    when_empty: Any = MISSING
    """The value of a variable set but empty; MISSING: the default, as when unset."""
    shown: str = ""
    """The README's default cell when the default alone does not say it (markdown)."""
    aliases: tuple[Alias, ...] = ()
    """Deprecated former names."""


@overload
def setting(
    env: str,
    default: str,
    *,
    doc: str,
    when_empty: str = ...,
    shown: str = "",
    aliases: Sequence[Alias] = (),
) -> str: ...
@overload
def setting(
    env: str,
    default: _T,
    *,
    doc: str,
    parse: Callable[[str], _T],
    when_empty: _T = ...,
    shown: str = "",
    aliases: Sequence[Alias] = (),
) -> _T: ...
def setting(
    env: str,
    default: Any,
    *,
    doc: str,
    parse: Callable[[str], Any] | None = None,
    when_empty: Any = MISSING,
    shown: str = "",
    aliases: Sequence[Alias] = (),
) -> Any:
    """A dataclass field read from ``env`` (``default`` when unset or empty).

    ``parse`` turns the stripped raw value into the field's value (default: the text as
    is); ``when_empty`` is the value of a variable that is set but empty, for settings
    where empty switches a feature off.
    """
    spec = Setting(
        env=env,
        parse=text if parse is None else parse,
        doc=" ".join(doc.split()),
        when_empty=when_empty,
        shown=shown,
        aliases=tuple(aliases),
    )
    return field(default=default, metadata={_KEY: spec})


def settings(cls: type[Any]) -> list[tuple[str, Any, Setting]]:
    """(field name, default, Setting) of every setting of a config dataclass, in order."""
    return [(f.name, f.default, f.metadata[_KEY]) for f in fields(cls) if _KEY in f.metadata]


def read_env(cls: type[_C], environ: Mapping[str, str] | None = None) -> _C:
    """An instance of ``cls`` with every setting read from ``environ`` (``os.environ``).

    Raises ConfigError naming the variable (or the deprecated alias) whose value is bad.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    deprecated: dict[str, str] = {}
    for name, _default, spec in settings(cls):
        source, raw, converted = spec.env, env.get(spec.env), env.get(spec.env)
        for alias in spec.aliases:
            if alias.env not in env:
                continue
            advice = alias.advice or f"set {spec.env} instead"
            if raw is not None:
                advice += f"; ignored, since {spec.env} is set"
            deprecated.setdefault(alias.env, advice)
            if raw is None:
                value = alias.convert(env[alias.env])
                if value is not None:
                    source, raw, converted = alias.env, env[alias.env], value
        if raw is None or converted is None:
            continue
        stripped = converted.strip()
        if not stripped:
            if spec.when_empty is not MISSING:
                values[name] = spec.when_empty
            continue
        try:
            values[name] = spec.parse(stripped)
        except ValueError as exc:
            raise ConfigError(f"{source}={raw!r} {exc}") from None
    for old, advice in deprecated.items():
        # Once per process: a worker reads its configuration twice (main, then the app).
        if old in _warned:
            continue
        _warned.add(old)
        _log.warning("%s is deprecated and goes away in the next release: %s", old, advice)
    return cls(**values)


def markdown_table(cls: type[Any]) -> str:
    """The README table of ``cls``'s settings: variable, default, meaning."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for _name, default, spec in settings(cls):
        meaning = spec.doc.replace("|", "\\|")
        for alias in spec.aliases:
            meaning += f". Deprecated alias, read for one more release: `{alias.env}`"
            meaning += f" ({alias.doc})" if alias.doc else ""
        lines.append(f"| `{spec.env}` | {spec.shown or _shown(default)} | {meaning} |")
    return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    if value == "" or value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, tuple):
        return "`" + ",".join(map(str, value)) + "`"
    return f"`{value}`"


# --- parsers: stripped, non-empty raw text to a value; ValueError(reason) when unusable ----


def text(raw: str) -> str:
    """The text as is."""
    return raw


def upper(raw: str) -> str:
    """The text in upper case (logging levels)."""
    return raw.upper()


def path(raw: str) -> Path:
    """A filesystem path."""
    return Path(raw)


def integer(*, minimum: int = 0) -> Callable[[str], int]:
    """An integer of at least ``minimum``."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("is not an integer") from None
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value

    return parse


def number(*, minimum: float = 0.0, positive: bool = False) -> Callable[[str], float]:
    """A number of at least ``minimum`` (above 0 when ``positive``)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("is not a number") from None
        if value != value or value < minimum:  # NaN compares false with everything
            raise ValueError(f"must be >= {minimum:g}")
        if positive and not value > 0:
            raise ValueError("must be > 0")
        return value

    return parse


def boolean(raw: str) -> bool:
    """true/false, 1/0, yes/no, on/off."""
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("is not a boolean (true/false, on/off)")


def address(raw: str) -> str:
    """``host:port``, port 0-65535 (0 picks a free port)."""
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("must be host:port")
    return raw


def address_list(raw: str) -> tuple[str, ...]:
    """A comma-separated list of at least one ``host:port``."""
    servers = tuple(address(part.strip()) for part in raw.split(",") if part.strip())
    if not servers:
        raise ValueError("must list at least one host:port")
    return servers
