"""``python -m server.access``: rewrite README.md's roles table from ``server/access/_table.py``.

The block between ``<!-- roles-table: begin -->`` and ``<!-- roles-table: end -->`` is
replaced by ``roles_table_markdown()``; ``--check`` changes nothing and exits 1 when the
README differs (``tests/server/access/test_access_matrix.py`` checks the same).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from server.access._table import roles_table_markdown

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"(<!-- roles-table: begin -->\n)(.*?)(<!-- roles-table: end -->)", re.S)


def with_roles_table(text: str) -> str:
    """``text`` with its roles-table block rendered from the table; ValueError if it has none."""
    if BLOCK.search(text) is None:
        raise ValueError("no <!-- roles-table: begin/end --> block")
    return BLOCK.sub(lambda m: m.group(1) + roles_table_markdown() + m.group(3), text, count=1)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="only report whether it differs")
    ns = parser.parse_args()
    text = ns.readme.read_text(encoding="utf-8")
    try:
        rendered = with_roles_table(text)
    except ValueError as exc:
        sys.exit(f"{ns.readme}: {exc}")
    if rendered == text:
        return
    if ns.check:
        sys.exit(f"{ns.readme}: the roles table differs; run python -m server.access")
    ns.readme.write_text(rendered, encoding="utf-8")
    print(f"{ns.readme}: roles table rewritten")


if __name__ == "__main__":
    main()
