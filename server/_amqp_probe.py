"""Is there a RabbitMQ broker at this URL? A typed AMQP 0-9-1 login probe, and the errors.

``check_amqp`` performs the connection handshake (login, open the vhost, close cleanly) on
a plain socket, so "nothing answers" (BrokerUnreachable) and "a broker answers but refuses
these credentials or vhost" (BrokerRefused) are told apart without leaving a client
library's warnings in the broker's log.

Exceptions::

    BrokerError (RuntimeError)        any failure to find, probe, start or stop a broker
     ├── BrokerNotInstalled           no rabbitmq-server to launch a private node with
     ├── BrokerUnreachable            nothing completes an AMQP handshake at the address
     └── BrokerRefused                a broker answers but refuses these credentials or vhost
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
"""Hosts for which ``ensure_broker`` may start a private node (it binds 127.0.0.1 only)."""


class BrokerError(RuntimeError):
    """A broker could not be found, probed, started or stopped."""


class BrokerNotInstalled(BrokerError):
    """No ``rabbitmq-server`` installation to launch a private node with."""


class BrokerUnreachable(BrokerError):
    """Nothing completed an AMQP 0-9-1 handshake at the address in time."""


class BrokerRefused(BrokerError):
    """A broker answered but refused the login or the virtual host."""


# --- Addresses --------------------------------------------------------------------------


@dataclass(frozen=True)
class AmqpAddress:
    """The parts of an ``amqp://user:pass@host:port/vhost`` URL, with kombu's defaults."""

    host: str
    port: int
    userid: str
    password: str
    vhost: str

    @classmethod
    def parse(cls, url: str) -> AmqpAddress:
        """Parse ``url`` the way kombu does: ``//`` and an empty path both mean vhost ``/``."""
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "pyamqp"):
            raise BrokerError(f"not a plain amqp:// URL: {url!r}")
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 5672,
            userid=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=unquote(parts.path[1:]) or "/",
        )

    def url(self) -> str:
        """This address as an ``amqp://`` URL (the vhost ``/`` is written ``//``)."""
        credentials = f"{quote(self.userid, safe='')}:{quote(self.password, safe='')}"
        vhost = "/" if self.vhost == "/" else quote(self.vhost, safe="")
        return f"amqp://{credentials}@{self.host}:{self.port}/{vhost}"


# --- Probe: a complete AMQP 0-9-1 handshake on a raw socket -----------------------------
#
# A raw handshake rather than kombu: it is typed, needs no connection pool or retry policy,
# distinguishes "nothing answers" from "answers but refuses us", and closes cleanly
# (Connection.Close / Close-Ok) so each probe leaves no "client unexpectedly closed TCP
# connection" warning in the broker's log.

_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_FRAME_METHOD = 1
_FRAME_HEARTBEAT = 8
_FRAME_END = b"\xce"
_CONNECTION_START = (10, 10)
_CONNECTION_START_OK = (10, 11)
_CONNECTION_TUNE = (10, 30)
_CONNECTION_TUNE_OK = (10, 31)
_CONNECTION_OPEN = (10, 40)
_CONNECTION_OPEN_OK = (10, 41)
_CONNECTION_CLOSE = (10, 50)
_CONNECTION_CLOSE_OK = (10, 51)


def _shortstr(value: bytes) -> bytes:
    return bytes([len(value)]) + value


def _longstr(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _method_frame(method: tuple[int, int], arguments: bytes) -> bytes:
    payload = struct.pack(">HH", *method) + arguments
    return struct.pack(">BHI", _FRAME_METHOD, 0, len(payload)) + payload + _FRAME_END


# Asking for authentication_failure_close makes RabbitMQ answer a bad login with
# Connection.Close 403 instead of silently dropping the socket, so the error says why.
_CLIENT_PROPERTIES = _longstr(
    _shortstr(b"product")
    + b"S"
    + _longstr(b"agentic-backend broker probe")
    + _shortstr(b"capabilities")
    + b"F"
    + _longstr(_shortstr(b"authentication_failure_close") + b"t\x01")
)


class _Conversation:
    """Blocking frame I/O on one socket, every read bounded by a shared deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def send(self, data: bytes) -> None:
        self._sock.settimeout(max(self._deadline - time.monotonic(), 0.001))
        self._sock.sendall(data)

    def _recv_exact(self, size: int) -> bytes:
        chunks: list[bytes] = []
        remaining = size
        while remaining:
            self._sock.settimeout(max(self._deadline - time.monotonic(), 0.001))
            chunk = self._sock.recv(remaining)
            if not chunk:
                raise ConnectionResetError("connection closed by the peer")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def read_method(self) -> tuple[tuple[int, int], bytes]:
        """The next method frame on channel 0 as ``((class, method), arguments)``."""
        while True:
            header = self._recv_exact(7)
            if header.startswith(b"AMQP"):
                # The server rejected our protocol header by sending its own.
                raise BrokerUnreachable(f"peer speaks another AMQP version: {header!r}")
            frame_type, _channel, size = struct.unpack(">BHI", header)
            payload = self._recv_exact(size)
            if self._recv_exact(1) != _FRAME_END:
                raise BrokerUnreachable("peer is not an AMQP 0-9-1 broker (bad frame end)")
            if frame_type == _FRAME_HEARTBEAT:
                continue
            if frame_type != _FRAME_METHOD or size < 4:
                raise BrokerUnreachable(f"unexpected AMQP frame type {frame_type}")
            class_id, method_id = struct.unpack(">HH", payload[:4])
            return (class_id, method_id), payload[4:]


def _close_reason(arguments: bytes) -> str:
    (code,) = struct.unpack(">H", arguments[:2])
    text = arguments[3 : 3 + arguments[2]].decode(errors="replace")
    return f"{code} {text}"


def _handshake(conv: _Conversation, address: AmqpAddress) -> None:
    conv.send(_PROTOCOL_HEADER)
    method, _ = conv.read_method()
    if method != _CONNECTION_START:
        raise BrokerUnreachable(f"expected Connection.Start, got method {method}")
    response = b"\x00" + address.userid.encode() + b"\x00" + address.password.encode()
    conv.send(
        _method_frame(
            _CONNECTION_START_OK,
            _CLIENT_PROPERTIES + _shortstr(b"PLAIN") + _longstr(response) + _shortstr(b"en_US"),
        )
    )
    method, arguments = conv.read_method()
    if method == _CONNECTION_CLOSE:
        conv.send(_method_frame(_CONNECTION_CLOSE_OK, b""))
        raise BrokerRefused(f"login as {address.userid!r} refused: {_close_reason(arguments)}")
    if method != _CONNECTION_TUNE:
        raise BrokerUnreachable(f"expected Connection.Tune, got method {method}")
    channel_max, frame_max, _heartbeat = struct.unpack(">HIH", arguments[:8])
    # Heartbeat 0: the probe lives for milliseconds and must not be closed for silence.
    conv.send(_method_frame(_CONNECTION_TUNE_OK, struct.pack(">HIH", channel_max, frame_max, 0)))
    conv.send(_method_frame(_CONNECTION_OPEN, _shortstr(address.vhost.encode()) + b"\x00\x00"))
    method, arguments = conv.read_method()
    if method == _CONNECTION_CLOSE:
        conv.send(_method_frame(_CONNECTION_CLOSE_OK, b""))
        raise BrokerRefused(f"vhost {address.vhost!r} refused: {_close_reason(arguments)}")
    if method != _CONNECTION_OPEN_OK:
        raise BrokerUnreachable(f"expected Connection.Open-Ok, got method {method}")
    conv.send(
        _method_frame(
            _CONNECTION_CLOSE, struct.pack(">H", 200) + _shortstr(b"probe done") + b"\0\0\0\0"
        )
    )
    method, _ = conv.read_method()
    if method != _CONNECTION_CLOSE_OK:
        raise BrokerUnreachable(f"expected Connection.Close-Ok, got method {method}")


def check_amqp(url: str, *, timeout_seconds: float = 2.0) -> None:
    """Log in to the broker at ``url``, open its vhost, and close again, within the timeout.

    Raises ``BrokerUnreachable`` when nothing AMQP answers in time and ``BrokerRefused`` when
    a broker answers but refuses the credentials or the vhost.
    """
    address = AmqpAddress.parse(url)
    deadline = time.monotonic() + timeout_seconds
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout_seconds) as s:
            _handshake(_Conversation(s, deadline), address)
    except (OSError, struct.error, IndexError) as exc:
        # OSError covers refused, reset and timed-out sockets; struct/IndexError a peer that
        # sends something frame-shaped but too short to be AMQP.
        raise BrokerUnreachable(
            f"no AMQP broker answered at {address.host}:{address.port} "
            f"within {timeout_seconds:g}s ({type(exc).__name__}: {exc})"
        ) from exc


# --- Installation -----------------------------------------------------------------------
