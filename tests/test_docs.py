"""The docs a user reads stay true to the code."""

from __future__ import annotations

import re

from tests._support import REPO


def env_vars(path: str) -> set[str]:
    text = (REPO / path).read_text()
    return set(re.findall(r'"((?:AGENTIC_[A-Z_]+)|DATABASE_URL)"', text))


def test_readme_documents_every_server_and_worker_variable() -> None:
    readme = (REPO / "README.md").read_text()
    names = env_vars("server/_config.py") | env_vars("workers/_config.py")
    assert {"AGENTIC_LISTEN_ADDRESS", "AGENTIC_CLAIM_LEASE_SECONDS"} <= names
    missing = {n for n in names if f"`{n}`" not in readme}
    assert not missing, f"README configuration table lacks {sorted(missing)}"


def test_readme_documents_every_sidecar_variable() -> None:
    readme = (REPO / "README.md").read_text()
    text = (REPO / "cache_sidecar" / "_config.py").read_text()
    names = set(re.findall(r'get\(\s*"(AGENTIC_[A-Z_]+)"', text))
    assert "AGENTIC_MEMCACHED_SERVERS" in names
    missing = {n for n in names if f"`{n}`" not in readme}
    assert not missing, f"README sidecar table lacks {sorted(missing)}"


def test_readme_starts_with_the_two_commands() -> None:
    head = (REPO / "README.md").read_text().split("\n## ", 1)[0]
    assert "make run" in head
    assert "make test" in head


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (REPO / ".ci" / "run").read_text()
