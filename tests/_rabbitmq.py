"""A private RabbitMQ node for fault tests: the test starts it, SIGKILLs it, restarts it.

The machine may run a shared RabbitMQ node (Debian's, on 127.0.0.1:5672) that other work
relies on: tests never stop, restart or reconfigure it. ``PrivateRabbit`` runs its own node
through ``devtools.broker.RabbitNode`` (the same launch code ``make run`` uses) on free ports,
with its own data directory and Erlang cookie, so killing it cannot touch anything else.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

from devtools.broker import NodeConfig, RabbitNode, find_rabbitmq, process_table
from devtools.ports import free_port, port_bindable

# Ten minutes: the pipeline needs it above the longest task hard time limit, and test tasks
# run for seconds; tests of the timeout itself pass their own, shorter value.
DEFAULT_CONSUMER_TIMEOUT_MS = 600_000


class PrivateRabbit:
    """A throwaway RabbitMQ node on loopback: ``start``, ``kill`` (-9), ``restart``, ``stop``.

    Data lives in ``workdir`` (a fresh temporary directory by default, removed by ``close``)
    and survives ``kill``/``restart``: same node name, ports and data directory each time.
    Use as a context manager to start it and always stop and clean up afterwards.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        consumer_timeout_ms: int = DEFAULT_CONSUMER_TIMEOUT_MS,
    ) -> None:
        install = find_rabbitmq()  # first: a missing installation must not leak a temp dir
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="agentic-rabbit-")) if workdir is None else workdir
        )
        self.node = RabbitNode(
            NodeConfig(
                base_dir=self.workdir,
                # Unique per instance: two nodes with one name cannot both register with epmd.
                node_name=f"agentic-test-{uuid.uuid4().hex[:8]}@localhost",
                amqp_port=free_port(),
                dist_port=free_port(),
                consumer_timeout_ms=consumer_timeout_ms,
            ),
            install,
        )

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:<port>//``; unchanged across restarts."""
        return self.node.url

    @property
    def port(self) -> int:
        """The AMQP port on 127.0.0.1."""
        return self.node.config.amqp_port

    @property
    def node_name(self) -> str:
        """The Erlang node name, for ``rabbitmqctl -n``."""
        return self.node.config.node_name

    @property
    def pid(self) -> int | None:
        """The OS pid of the node's Erlang VM (beam.smp) while it runs."""
        return self.node.pid

    def processes(self) -> list[int]:
        """Every process of the running node: its shell, the VM and the VM's helpers."""
        return self.node.processes()

    def start(self, *, timeout_seconds: float = 60.0) -> PrivateRabbit:
        """Start the node; return once guest can log in (raises with the node's log if not)."""
        self.node.start(timeout_seconds=timeout_seconds)
        return self

    def kill(self) -> None:
        """SIGKILL the VM and its children, as a crash would; returns once all are gone."""
        self.node.kill()

    def restart(self, *, timeout_seconds: float = 60.0) -> None:
        """Start again on the same ports and data (stopping first if it still runs)."""
        if self.node.running:
            self.node.stop()
        self.node.start(timeout_seconds=timeout_seconds)

    def stop(self) -> None:
        """Stop gracefully (``rabbitmqctl stop``), then SIGKILL anything left."""
        self.node.stop()

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl -n <node> <args>`` with the node's private cookie; its stdout."""
        return self.node.ctl(*args)

    def log(self) -> str:
        """The node's log and console output (tails), for assertion messages."""
        return self.node.diagnostics()

    def close(self) -> None:
        """Stop the node and delete its data, if the directory was ours."""
        try:
            self.stop()
        finally:
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrivateRabbit:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def listener_pid(port: int) -> int | None:
    """The pid of the process listening on TCP 127.0.0.1:``port`` (Linux /proc), if any.

    Lets a test identify the shared broker's VM without naming it, to prove it was untouched.
    """
    if port_bindable(port):
        return None
    inodes: set[str] = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in process_table():
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                try:
                    if str(fd.readlink()) in wanted:
                        return pid
                except OSError:
                    continue
        except OSError:  # gone, or not ours to read
            continue
    return None
