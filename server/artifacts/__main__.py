"""``python -m server.artifacts expire``: expire unfinished uploads and remove their bytes.

Reads the server's configuration (``DATABASE_URL``, ``AGENTIC_OBJECT_STORE_URL``) from the
environment; prints what it did as one JSON object; exits 1 when some bytes could not be
removed (they are tried again on the next run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime

from server._config import ConfigError, ServerConfig
from server.artifacts._expiry import expire as run_expiry


def main(argv: list[str] | None = None) -> int:
    """Run one sweep."""
    parser = argparse.ArgumentParser(prog="python -m server.artifacts", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    expire = commands.add_parser("expire", help="expire overdue uploads, finish deletions")
    expire.add_argument(
        "--now",
        type=datetime.fromisoformat,
        default=None,
        help="treat this ISO 8601 time as now (default: the clock)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # The sweep serves nobody: the server's authentication settings do not concern it.
        config = ServerConfig.from_env({**os.environ, "AGENTIC_AUTH_ENABLED": "false"})
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    report = run_expiry(config, now=args.now.astimezone(UTC) if args.now is not None else None)
    print(
        json.dumps(
            {
                "expired_uploads": report.expired_uploads,
                "finished_deletions": report.finished_deletions,
                "failures": report.failures,
            }
        )
    )
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
