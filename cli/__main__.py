"""``python -m cli``: the ``agentic`` command."""

from __future__ import annotations

from cli._app import main

if __name__ == "__main__":
    raise SystemExit(main())
