"""Each process loads only the core and itself (issue #10): checked in fresh interpreters.

``lint-imports`` (``make lint``) checks the import graph statically; this checks what the
entry points really load, which also catches an import hidden in a function body.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests._support import REPO

_LOADED = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
    ("core", "server", "cache_sidecar", "workers", "devtools", "tests", "bench"))))
"""


def loaded_by(*modules: str) -> list[str]:
    """Our modules a fresh interpreter has loaded after importing ``modules``."""
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, *modules],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout)
    return loaded


@pytest.mark.parametrize(
    ("entry_points", "own"),
    [
        (("workers.app", "workers.__main__"), "workers"),
        (("cache_sidecar.__main__", "cache_sidecar"), "cache_sidecar"),
        (("server.__main__", "server.app"), "server"),
    ],
)
def test_a_process_loads_only_the_core_and_itself(entry_points: tuple[str, ...], own: str) -> None:
    loaded = loaded_by(*entry_points)
    assert any(m.startswith(own) for m in loaded)
    foreign = [m for m in loaded if m.split(".")[0] not in ("core", own)]
    assert foreign == [], f"{own}'s entry points load {foreign}"


def test_the_core_loads_nothing_above_it() -> None:
    core = [
        "core." + name
        for name in ("cache", "config", "db", "deadline", "events", "serving", "tasks", "tls")
    ]
    loaded = loaded_by("core", *core)
    assert [m for m in loaded if not m.startswith("core")] == []
