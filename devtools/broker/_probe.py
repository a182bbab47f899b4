"""Is there a RabbitMQ broker at this URL? A login probe through py-amqp, and the errors.

``check_amqp`` opens one ``amqp.Connection`` (the client kombu itself uses) with short
timeouts: login, open the vhost, close cleanly. "Nothing answers" (BrokerUnreachable) and
"a broker answers but refuses these credentials or vhost" (BrokerRefused) are told apart
by the AMQP reply: py-amqp advertises ``authentication_failure_close``, so RabbitMQ answers
a bad login with Connection.Close 403 instead of dropping the socket, and an unknown vhost
with 530. The clean Connection.Close leaves no "client unexpectedly closed TCP connection"
warning in the broker's log, so probing the shared broker does not disturb it.

Exceptions::

    BrokerError (RuntimeError)        any failure to find, probe, start or stop a broker
     ├── BrokerNotInstalled           no rabbitmq-server to launch a private node with
     ├── BrokerUnreachable            nothing completes an AMQP handshake at the address
     └── BrokerRefused                a broker answers but refuses these credentials or vhost
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import amqp
from amqp.exceptions import AccessRefused, AMQPError, NotAllowed

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


def check_amqp(url: str, *, timeout_seconds: float = 2.0) -> None:
    """Log in to the broker at ``url``, open its vhost, and close again.

    Each step (TCP connect, every read and write of the handshake) is bounded by
    ``timeout_seconds``. Raises ``BrokerUnreachable`` when nothing AMQP answers in time and
    ``BrokerRefused`` when a broker answers but refuses the credentials or the vhost.
    """
    address = AmqpAddress.parse(url)
    connection = amqp.Connection(
        host=f"{address.host}:{address.port}",
        userid=address.userid,
        password=address.password,
        virtual_host=address.vhost,
        connect_timeout=timeout_seconds,
        read_timeout=timeout_seconds,
        write_timeout=timeout_seconds,
        heartbeat=0,  # the probe lives for milliseconds and must not be closed for silence
    )
    try:
        try:
            connection.connect()
        except BaseException:
            connection.collect()  # a failed handshake leaves its socket open otherwise
            raise
        connection.close()  # Connection.Close / Close-Ok: nothing in the broker's log
    except AccessRefused as exc:  # 403 on Connection.Start-Ok
        raise BrokerRefused(f"login as {address.userid!r} refused: {exc}") from exc
    except NotAllowed as exc:  # 530 on Connection.Open
        raise BrokerRefused(f"vhost {address.vhost!r} refused: {exc}") from exc
    except (OSError, AMQPError, struct.error) as exc:
        # OSError covers refused, reset, closed and timed-out sockets; AMQPError and
        # struct.error a peer that sends something frame-shaped that is not AMQP 0-9-1.
        raise BrokerUnreachable(
            f"no AMQP broker answered at {address.host}:{address.port} "
            f"within {timeout_seconds:g}s ({type(exc).__name__}: {exc})"
        ) from exc
