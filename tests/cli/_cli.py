"""Running the ``agentic`` CLI as a user does: ``python -m cli`` in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests._support import REPO

__all__ = ["CliEnv", "described", "json_lines"]

RUN_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class CliEnv:
    """The environment a CLI process gets: the server, a token, its own cache directory."""

    address: str
    token: str
    cache_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        """os.environ plus the connection settings (no terminal colours in pipes)."""
        return {
            **os.environ,
            "AGENTIC_ADDRESS": self.address,
            "AGENTIC_TOKEN": self.token,
            "XDG_CACHE_HOME": str(self.cache_dir),
            **extra,
        }

    def command(self, *args: str) -> list[str]:
        """The argv of ``agentic *args``."""
        return [sys.executable, "-m", "cli", *args]

    def run(
        self,
        *args: str,
        timeout: float = RUN_TIMEOUT_SECONDS,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``agentic *args`` to completion, output captured."""
        return subprocess.run(
            self.command(*args),
            cwd=REPO,
            env=dict(env) if env is not None else self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, stdout: Any = subprocess.PIPE) -> subprocess.Popen[str]:
        """``agentic *args`` in the background."""
        return subprocess.Popen(
            self.command(*args),
            cwd=REPO,
            env=self.env(),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line parsed as JSON (a line that is not JSON fails the test)."""
    out: list[dict[str, Any]] = []
    for line in stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\nstdout:\n{stdout}") from None
    return out


def described(result: subprocess.CompletedProcess[str]) -> str:
    """The exit code and both streams, for assertion messages."""
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
