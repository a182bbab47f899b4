"""The docs a user reads stay true to the code."""

from __future__ import annotations

from core.config import settings
from devtools.configdocs import TABLES, render
from tests._support import REPO


def test_readme_configuration_tables_are_rendered_from_the_declarations() -> None:
    readme = (REPO / "README.md").read_text()
    assert readme == render(readme), "README configuration tables are stale: run `make docs`"


def test_every_declared_variable_is_in_a_readme_table() -> None:
    readme = (REPO / "README.md").read_text()
    for cls in TABLES.values():
        names = {spec.env for _name, _default, spec in settings(cls)}
        missing = {n for n in names if f"| `{n}` |" not in readme}
        assert not missing, f"README configuration table lacks {sorted(missing)}"


def test_readme_starts_with_the_two_commands() -> None:
    head = (REPO / "README.md").read_text().split("\n## ", 1)[0]
    assert "make run" in head
    assert "make test" in head


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (REPO / ".ci" / "run").read_text()
