"""A RabbitMQ broker for ``make run`` and the fault tests: probe one, or launch a private node.

``ensure_broker(url, workdir)`` answers "which broker do I use": the one at ``url`` when it
completes an AMQP handshake, otherwise a private node started from the installed
``rabbitmq-server`` under ``workdir``. ``RabbitNode`` is that private node: one
``rabbitmq-server`` process tree on its own ports, data directory, Erlang cookie and config,
so it can be killed with SIGKILL and restarted on the same data without touching any other
RabbitMQ node on the machine (tests/_rabbitmq.py builds its fault-test harness on it).

Exceptions::

    BrokerError (RuntimeError)        any failure to find, probe, start or stop a broker
     ├── BrokerNotInstalled           no rabbitmq-server to launch a private node with
     ├── BrokerUnreachable            nothing completes an AMQP handshake at the address
     └── BrokerRefused                a broker answers but refuses these credentials or vhost
"""

from devtools.broker._ensure import ensure_broker
from devtools.broker._node import (
    DEFAULT_CONSUMER_TIMEOUT_MS,
    NodeConfig,
    RabbitInstall,
    RabbitNode,
    epmd_names,
    find_rabbitmq,
    live_pids,
    process_alive,
    process_table,
)
from devtools.broker._probe import (
    LOOPBACK_HOSTS,
    AmqpAddress,
    BrokerError,
    BrokerNotInstalled,
    BrokerRefused,
    BrokerUnreachable,
    check_amqp,
)

__all__ = [
    "DEFAULT_CONSUMER_TIMEOUT_MS",
    "LOOPBACK_HOSTS",
    "AmqpAddress",
    "BrokerError",
    "BrokerNotInstalled",
    "BrokerRefused",
    "BrokerUnreachable",
    "NodeConfig",
    "RabbitInstall",
    "RabbitNode",
    "check_amqp",
    "ensure_broker",
    "epmd_names",
    "find_rabbitmq",
    "live_pids",
    "process_alive",
    "process_table",
]
