"""One invocation's connection and output: the channel, the token, deadlines, stdout/stderr.

Connection settings come from flags, else the environment, read once here
(``AGENTIC_ADDRESS``, ``AGENTIC_TOKEN``, ``AGENTIC_TOKEN_FILE``), and are passed down as a
frozen value. Results go to stdout (tables, or one JSON object per line with
``--output json``); logs, progress bars and errors go to stderr, so stdout stays parseable.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console

from cli._errors import UsageError
from core.tls import TlsConfigError, channel_credentials

__all__ = ["DEFAULT_ADDRESS", "ConnectionConfig", "Output", "Session"]

DEFAULT_ADDRESS = "127.0.0.1:50051"

ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True)
class ConnectionConfig:
    """Where the server is and how we prove who we are."""

    address: str
    """host:port of the API server."""
    token: str
    """The bearer JWT sent on every call ("" sends none)."""
    tls: bool
    """TLS to the server (implied by ca_file)."""
    ca_file: str
    """PEM CAs to trust ("" with tls: the system roots)."""
    cert_file: str
    """PEM client certificate for mTLS ("" for none)."""
    key_file: str
    """Its private key."""
    rpc_timeout_seconds: float
    """Deadline of each unary call."""

    @classmethod
    def from_args(cls, args: Any, environ: Mapping[str, str]) -> ConnectionConfig:
        """Flags first, then the environment, then the defaults."""
        token = args.token or ""
        token_file = args.token_file or ""
        if token and token_file:
            raise UsageError("give --token or --token-file, not both")
        if not token and not token_file:
            token = environ.get("AGENTIC_TOKEN", "")
            token_file = "" if token else environ.get("AGENTIC_TOKEN_FILE", "")
        if token_file:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as exc:
                raise UsageError(f"cannot read token file {token_file}: {exc.strerror}") from None
        if bool(args.cert_file) != bool(args.key_file):
            raise UsageError("--cert-file and --key-file go together")
        return cls(
            address=args.address or environ.get("AGENTIC_ADDRESS", "") or DEFAULT_ADDRESS,
            token=token,
            tls=bool(args.tls or args.ca_file or args.cert_file),
            ca_file=args.ca_file or "",
            cert_file=args.cert_file or "",
            key_file=args.key_file or "",
            rpc_timeout_seconds=args.rpc_timeout,
        )

    def channel(self) -> grpc.Channel:
        """A channel to the server (nothing is sent until the first call)."""
        if not self.tls:
            return grpc.insecure_channel(self.address)
        if self.ca_file:
            try:
                credentials = channel_credentials(
                    self.ca_file, self.cert_file or None, self.key_file or None
                )
            except TlsConfigError as exc:
                raise UsageError(str(exc)) from None
        else:
            credentials = grpc.ssl_channel_credentials()
        return grpc.secure_channel(self.address, credentials)


class Output:
    """stdout for results, stderr for everything else, in the chosen mode."""

    def __init__(self, mode: str) -> None:
        self.json = mode == "json"
        # rich colours only when the stream is a terminal (and honours NO_COLOR).
        # Piped, tables keep their natural width (ids whole, for grep and cut); on a
        # terminal they fit its width.
        piped_width = None if sys.stdout.isatty() else 1000
        self.out = Console(file=sys.stdout, highlight=False, soft_wrap=True, width=piped_width)
        self.err = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def emit(self, kind: str, message: Message | None = None, **fields: Any) -> None:
        """One JSON line ``{"type": kind, kind: <message>, **fields}`` (json mode only)."""
        if not self.json:
            return
        line: dict[str, Any] = {"type": kind}
        if message is not None:
            line[kind] = to_dict(message)
        line.update(fields)
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    def note(self, text: str) -> None:
        """A line for people on stderr (both modes)."""
        self.err.print(text, markup=False, highlight=False)


def to_dict(message: Message) -> dict[str, Any]:
    """The stable JSON form of a message: proto field names, enums by name."""
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result


class Session:
    """What every command gets: the stubs' channel, call metadata and the output."""

    def __init__(self, config: ConnectionConfig, output: Output, *, cache_dir: Path) -> None:
        self.config = config
        self.output = output
        self.cache_dir = cache_dir
        """Where the CLI keeps its state (unfinished uploads)."""
        self.channel = config.channel()
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {config.token}"),) if config.token else ()
        )

    def call(
        self, method: Callable[..., ResponseT], request: Message, timeout: float | None = None
    ) -> ResponseT:
        """A unary call with the token and a deadline (``--rpc-timeout`` unless given)."""
        return method(
            request,
            timeout=self.config.rpc_timeout_seconds if timeout is None else timeout,
            metadata=self.metadata,
        )

    def stream(
        self, method: Callable[..., Iterator[ResponseT]], request: Message, timeout: float | None
    ) -> Iterator[ResponseT]:
        """A server-streaming call with the token (``timeout`` None: no deadline)."""
        return method(request, timeout=timeout, metadata=self.metadata)

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()


def configure_logging(verbose: int) -> None:
    """Library logs (grpc's among them) go to stderr: warnings by default, -v info, -vv
    debug."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(message)s")
