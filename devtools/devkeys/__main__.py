"""``python -m devtools.devkeys``: development keys and tokens.

    python -m devtools.devkeys ensure --dir .dev/auth      # first run: make a key pair
    python -m devtools.devkeys keygen --dir .dev/auth --rotate
    python -m devtools.devkeys retire --dir .dev/auth --kid OLD_KID
    python -m devtools.devkeys mint --dir .dev/auth --sub alice --role project_manager
    python -m devtools.devkeys mint --dir .dev/auth --sub beat --role administrator --no-session

``mint`` adds a fresh ``sid`` (a new session) unless ``--no-session`` asks for a session-less
service token.

``mint`` prints only the token on stdout, so ``TOKEN=$(python -m devtools.devkeys mint ...)``
works; every other message goes to stderr.
"""

from __future__ import annotations

import argparse
import sys

from devtools.devkeys._keys import DEV_AUDIENCE, DEV_ISSUER, DevKeys
from server.auth import Role


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit status."""
    args = _parser().parse_args(argv)
    keys = DevKeys(args.dir)
    if args.command == "ensure":
        existed = keys.has_key()
        kid = keys.ensure()
        print(f"{'using' if existed else 'generated'} dev key {kid}", file=sys.stderr)
        print(keys.jwks_path)
    elif args.command == "keygen":
        if keys.has_key() and not args.rotate:
            print(f"{args.dir} already holds a key; pass --rotate to add one", file=sys.stderr)
            return 1
        kid = keys.rotate()
        print(f"generated dev key {kid}", file=sys.stderr)
        print(keys.jwks_path)
    elif args.command == "retire":
        try:
            keys.retire(args.kid)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 1
    else:
        try:
            token = keys.mint(
                args.sub,
                [Role(r) for r in args.role],
                ttl_seconds=args.ttl_seconds,
                issuer=args.issuer,
                audience=args.audience,
                session=not args.no_session,
            )
        except FileNotFoundError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(token)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.devkeys", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--dir", required=True, help="the development key directory")
        return sub

    command("ensure", "generate a key pair unless the directory holds one")
    keygen = command("keygen", "generate a key pair")
    keygen.add_argument(
        "--rotate", action="store_true", help="add a new signing key, keep old public keys"
    )
    retire = command("retire", "remove an old key from the JWKS")
    retire.add_argument("--kid", required=True)
    mint = command("mint", "print a signed token")
    mint.add_argument("--sub", required=True, help="subject (the caller's user id)")
    mint.add_argument(
        "--role", action="append", default=[], choices=[r.value for r in Role], help="repeatable"
    )
    mint.add_argument("--ttl-seconds", type=int, default=3600)
    mint.add_argument("--issuer", default=DEV_ISSUER)
    mint.add_argument("--audience", default=DEV_AUDIENCE)
    mint.add_argument(
        "--no-session",
        action="store_true",
        help="no sid claim: a session-less service token (the API server admits it only "
        "for subjects and roles on AGENTIC_SESSIONLESS_SUBJECTS/_ROLES)",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
