"""``python -m devtools.devkeys mint`` gives every token a new session unless told not to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jwt

from tests._support import REPO


def _mint(keys: Path, *extra: str) -> dict[str, object]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.devkeys",
            "mint",
            "--dir",
            str(keys),
            "--sub",
            "alice",
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    claims: dict[str, object] = jwt.decode(done.stdout.strip(), options={"verify_signature": False})
    return claims


def test_mint_puts_a_fresh_sid_and_no_session_leaves_it_out(tmp_path: Path) -> None:
    keys = tmp_path / "auth"
    subprocess.run(
        [sys.executable, "-m", "devtools.devkeys", "ensure", "--dir", str(keys)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=True,
    )
    first, second = _mint(keys), _mint(keys)
    assert isinstance(first.get("sid"), str), first
    assert first["sid"]
    assert first["sid"] != second["sid"], "two sign-ins share a session"
    assert "sid" not in _mint(keys, "--no-session")
