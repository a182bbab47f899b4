"""The argparse tree and the one place that turns outcomes and errors into exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc

from cli import _admin, _artifacts, _projects, _tasks
from cli._errors import ExitCode, UsageError, describe, exit_code_of
from cli._session import DEFAULT_ADDRESS, ConnectionConfig, Output, Session, configure_logging

__all__ = ["build_parser", "main"]

EPILOG = """\
exit codes:
  0    the task SUCCEEDED (or the command did what it was asked)
  1    the task FAILED, or any other gRPC error (printed: code, reason, field: message)
  2    the task was CANCELLED
  3    --timeout passed before the task ended (the task keeps running)
  4    the server was unreachable or refused the caller
       (UNAVAILABLE, UNAUTHENTICATED, PERMISSION_DENIED)
  64   bad usage (an unknown flag, a bad value)
  130  interrupted (Ctrl-C)

environment: AGENTIC_ADDRESS, AGENTIC_TOKEN, AGENTIC_TOKEN_FILE, XDG_CACHE_HOME (upload state)
"""


class _Parser(argparse.ArgumentParser):
    """argparse exiting 64 (EX_USAGE) on bad usage instead of 2, which means CANCELLED here."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def _global_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Given twice: on the top parser with the defaults, and on every command with
    # SUPPRESS, so `agentic --output json tasks list` and `agentic tasks list --output json`
    # both work and a later flag wins.
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--address",
        default=default(None),
        metavar="HOST:PORT",
        help=f"the API server (env AGENTIC_ADDRESS, default {DEFAULT_ADDRESS})",
    )
    group.add_argument("--token", default=default(None), help="bearer JWT (env AGENTIC_TOKEN)")
    group.add_argument(
        "--token-file",
        default=default(None),
        metavar="FILE",
        help="read the token from FILE (env AGENTIC_TOKEN_FILE)",
    )
    group.add_argument(
        "--tls", action="store_true", default=default(False), help="TLS with the system's CAs"
    )
    group.add_argument(
        "--ca-file", default=default(None), metavar="PEM", help="TLS trusting these CAs"
    )
    group.add_argument(
        "--cert-file", default=default(None), metavar="PEM", help="client certificate (mTLS)"
    )
    group.add_argument(
        "--key-file", default=default(None), metavar="PEM", help="client private key (mTLS)"
    )
    group.add_argument(
        "--output",
        choices=["human", "json"],
        default=default("human"),
        help="human tables (default) or one JSON object per line",
    )
    group.add_argument(
        "--rpc-timeout",
        type=float,
        default=default(30.0),
        metavar="S",
        help="deadline of each unary call (default 30)",
    )
    group.add_argument(
        "-v", "--verbose", action="count", default=default(0), help="more logs on stderr"
    )


def _leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    # argparse has no public way to walk its subcommands; _actions and _SubParsersAction
    # have been stable since Python 3.2.
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        yield parser
    for action in subcommands:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaves(child)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = _Parser(
        prog="agentic",
        description="Command-line client of the agentic API server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_flags(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _projects.add_commands(commands)
    _artifacts.add_commands(commands)
    _tasks.add_commands(commands)
    _admin.add_commands(commands)
    for leaf in _leaves(parser):
        if leaf is not parser:
            leaf.epilog = EPILOG
            leaf.formatter_class = argparse.RawDescriptionHelpFormatter
            _global_flags(leaf, suppress=True)
    return parser


def _cache_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentic"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; its exit code."""
    environ = os.environ if environ is None else environ
    args: Any = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    output = Output(args.output)
    try:
        config = ConnectionConfig.from_args(args, environ)
        session = Session(config, output, cache_dir=_cache_dir(environ))
    except UsageError as exc:
        output.note(f"agentic: error: {exc}")
        return ExitCode.USAGE
    try:
        return int(args.run(session, args))
    except UsageError as exc:
        output.note(f"agentic: error: {exc}")
        return ExitCode.USAGE
    except grpc.RpcError as error:
        failure = describe(error)
        if output.json:
            sys.stderr.write(json.dumps(failure.as_dict()) + "\n")
        else:
            for line in failure.lines():
                output.note(line)
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                output.note(f"(is the server at {config.address} running?)")
        return exit_code_of(error)
    except KeyboardInterrupt:
        output.note("interrupted")
        return ExitCode.INTERRUPTED
    except OSError as exc:
        output.note(f"agentic: error: {exc}")
        return ExitCode.FAILED
    finally:
        session.close()
