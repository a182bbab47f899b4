"""``python -m devtools.devca --dir DIR [--force]``: create a local development CA.

Prints each file written, or that all were kept. Exit status 1 when the directory
cannot be written (or holds an unusable CA key: re-run with ``--force``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devtools.devca._ca import ensure_dev_ca


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.devca",
        description="create a development CA and server, sidecar and client certificates",
    )
    parser.add_argument("--dir", required=True, help="directory of the PEM files")
    parser.add_argument("--force", action="store_true", help="re-issue every file")
    args = parser.parse_args(argv)
    try:
        ca = ensure_dev_ca(args.dir, force=args.force)
    except (OSError, ValueError) as exc:
        print(f"devtools.devca: {exc}", file=sys.stderr)
        return 1
    for path in ca.written:
        print(f"wrote {path}")
    if not ca.written:
        print(f"kept the existing development CA in {ca.directory} (--force to re-issue)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
