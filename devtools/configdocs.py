"""The README's configuration tables, rendered from the config dataclasses.

``python -m devtools.configdocs`` (``make docs``) rewrites each table between its marker
comments in README.md; ``--check`` only reports whether the README is current (exit 1 when
not). ``tests/test_docs.py`` runs the same comparison, so a setting declared in code and
described otherwise in the README fails the tests.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from cache_sidecar import Config
from core.backup import BackupConfig
from core.config import markdown_table
from server._config import ServerConfig
from workers._beat_config import BeatConfig
from workers._config import WorkerConfig

__all__ = ["README", "TABLES", "render"]

README = Path(__file__).resolve().parent.parent / "README.md"

TABLES: dict[str, type] = {
    "server": ServerConfig,
    "worker": WorkerConfig,
    "sidecar": Config,
    "backup": BackupConfig,
    "beat": BeatConfig,
}
"""Marker name -> config dataclass: ``<!-- config:NAME -->`` ... ``<!-- /config:NAME -->``."""


def render(readme: str) -> str:
    """``readme`` with every marked table replaced by its rendering from the declarations."""
    for name, cls in TABLES.items():
        pattern = re.compile(
            rf"(<!-- config:{name} -->\n).*?(<!-- /config:{name} -->)", flags=re.DOTALL
        )
        match = pattern.search(readme)
        if match is None:
            raise ValueError(f"README.md lacks the <!-- config:{name} --> markers")
        readme = readme[: match.end(1)] + markdown_table(cls) + readme[match.start(2) :]
    return readme


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, compare) the README's configuration tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether it is current")
    args = parser.parse_args(argv)
    current = README.read_text()
    wanted = render(current)
    if current == wanted:
        return 0
    if args.check:
        print("README.md configuration tables are stale: run `make docs`", file=sys.stderr)
        return 1
    README.write_text(wanted)
    print("README.md configuration tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
