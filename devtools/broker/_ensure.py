"""``ensure_broker``: the broker ``make run`` uses, found at its URL or started privately."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from devtools.broker._node import (
    DEFAULT_CONSUMER_TIMEOUT_MS,
    NodeConfig,
    RabbitNode,
    find_rabbitmq,
)
from devtools.broker._probe import (
    LOOPBACK_HOSTS,
    AmqpAddress,
    BrokerError,
    BrokerUnreachable,
    check_amqp,
)
from devtools.ports import free_port, port_bindable

__all__ = ["ensure_broker"]


def ensure_broker(
    url: str,
    workdir: Path,
    *,
    consumer_timeout_ms: int = DEFAULT_CONSUMER_TIMEOUT_MS,
    probe_timeout_seconds: float = 2.0,
    start_timeout_seconds: float = 60.0,
) -> tuple[str, Callable[[], None] | None]:
    """A broker URL to use, and how to stop the broker if we started it.

    Returns ``(url, None)`` unchanged when a broker at ``url`` accepts its credentials within
    ``probe_timeout_seconds``. Otherwise starts a private node on the URL's port with the
    URL's user, password and vhost, keeping its data in ``workdir/rabbitmq`` so that queued
    messages survive from one ``make run`` to the next, and returns its URL with a graceful
    stop function. The node name derives from ``workdir``: two checkouts never share a node.

    Raises ``BrokerRefused`` when a broker answers but refuses the URL's credentials (a second
    broker would not help), ``BrokerUnreachable`` for a silent non-loopback URL,
    ``BrokerNotInstalled`` without rabbitmq-server, and ``BrokerError`` when the URL's port
    is held by something that is not an AMQP broker.
    """
    address = AmqpAddress.parse(url)
    try:
        check_amqp(url, timeout_seconds=probe_timeout_seconds)
        return url, None
    except BrokerUnreachable as exc:
        if address.host not in LOOPBACK_HOSTS:
            raise BrokerUnreachable(
                f"{exc}; a private broker is only started for a 127.0.0.1/localhost URL"
            ) from exc
    install = find_rabbitmq()
    if not port_bindable(address.port):
        raise BrokerError(
            f"port {address.port} of {url} is taken by something that is not an AMQP broker; "
            "use a broker URL with a free port"
        )
    digest = hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:10]
    node = RabbitNode(
        NodeConfig(
            base_dir=workdir / "rabbitmq",
            node_name=f"agentic-{digest}@localhost",
            amqp_port=address.port,
            dist_port=free_port(),  # not part of the data: any free port will do on each run
            consumer_timeout_ms=consumer_timeout_ms,
            userid=address.userid,
            password=address.password,
            vhost=address.vhost,
        ),
        install,
    )
    node.start(timeout_seconds=start_timeout_seconds)
    return node.url, node.stop
