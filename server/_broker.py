"""A RabbitMQ broker for ``make run`` and the fault tests: find one, or launch a private node.

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

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

DEFAULT_CONSUMER_TIMEOUT_MS = 1_800_000
"""RabbitMQ's own default (30 min). Callers running tasks pass their longest hard limit plus
margin: a delivery left unacknowledged longer than this closes the consumer's channel."""

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
"""Hosts for which ``ensure_broker`` may start a private node (it binds 127.0.0.1 only)."""

_EPMD_PORT = 4369
"""The node always registers with the default epmd: the environment we build never sets
ERL_EPMD_PORT, so this is where to look for (and wait for the release of) its name."""

_LOG_TAIL_LINES = 40


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


SYSTEM_SCRIPTS = (Path("/usr/lib/rabbitmq/bin/rabbitmq-server"),)
"""Where Debian and Ubuntu's package puts the real server script (not the /usr/sbin wrapper)."""


@dataclass(frozen=True)
class RabbitInstall:
    """The real ``rabbitmq-server`` and ``rabbitmqctl`` scripts of an installation."""

    server: Path
    ctl: Path

    @property
    def plugins_dir(self) -> Path | None:
        """The installation's application directory (rabbit, its dependencies, the plugins).

        The scripts are symlinks into ``rabbitmq_server-<version>/sbin``; ``plugins`` is
        beside that. None when the layout is unfamiliar.
        """
        plugins = self.server.resolve().parent.parent / "plugins"
        return plugins if plugins.is_dir() else None


def find_rabbitmq() -> RabbitInstall:
    """Locate the installed RabbitMQ scripts, or explain how to install them.

    Debian's ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to the ``rabbitmq`` user,
    changes to ``/var/lib/rabbitmq`` and so uses the system node's cookie: we always run the
    scripts it wraps, which live next to the wrapper in ``/usr/lib/rabbitmq/bin``.
    """
    candidates = list(SYSTEM_SCRIPTS)
    on_path = shutil.which("rabbitmq-server")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().with_name("rabbitmq-server"))
    for server in candidates:
        ctl = server.with_name("rabbitmqctl")
        if server.is_file() and ctl.is_file() and os.access(server, os.X_OK):
            return RabbitInstall(server=server, ctl=ctl)
    raise BrokerNotInstalled(
        "rabbitmq-server is not installed, so no private broker can be started: "
        "run `sudo apt-get install rabbitmq-server` (or point the broker URL at a running one)"
    )


_APP_LIST = re.compile(r"\{\s*(?:included_)?applications\s*,\s*\[([^\]]*)\]")


def _link_core_apps(source: Path, target: Path) -> bool:
    """Fill ``target`` with symlinks to ``rabbit`` and its dependencies found in ``source``.

    Why: a node scans every application in its plugins directory at boot (configuration
    schemas, feature flags, upgrade steps), loading modules of ~60 plugins it will never run.
    A directory holding only what the ``rabbit`` application depends on (read from the
    ``.app`` files, so it follows the installed version) saves about a second per start.
    Returns False, leaving ``target`` alone, when ``rabbit`` is not found there.
    """
    apps = {d.name.rsplit("-", 1)[0]: d for d in source.iterdir() if d.is_dir()}
    needed: set[str] = set()
    todo = ["rabbit"]
    while todo:  # bounded: each application is expanded at most once
        name = todo.pop()
        if name in needed or name not in apps:  # OTP applications live elsewhere
            continue
        needed.add(name)
        try:
            spec = (apps[name] / "ebin" / f"{name}.app").read_text(errors="replace")
        except OSError:
            continue
        for listed in _APP_LIST.findall(spec):
            todo.extend(atom.strip() for atom in listed.split(",") if atom.strip())
    if "rabbit" not in needed:
        return False
    target.mkdir(parents=True, exist_ok=True)
    for link in target.iterdir():  # refreshed every start: the installation may have changed
        if link.is_symlink():
            link.unlink()
    for name in needed:
        (target / apps[name].name).symlink_to(apps[name])
    return True


# --- Processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    """What the fault handling needs to know about one process."""

    ppid: int
    """Parent pid."""
    state: str
    """One-letter state; Z (zombie) and X (dead) count as gone."""
    name: str
    """Command name (``beam.smp``, ``erl_child_setup``...)."""


def process_table() -> dict[int, ProcessInfo]:
    """Every process we can see, by pid (Linux /proc, else ps)."""
    table: dict[int, ProcessInfo] = {}
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited while we were reading
                continue
            # The command name in parentheses may contain spaces: split around the last ')'.
            name = stat[stat.find("(") + 1 : stat.rfind(")")]
            fields = stat[stat.rfind(")") + 2 :].split()
            table[int(entry.name)] = ProcessInfo(ppid=int(fields[1]), state=fields[0], name=name)
        return table
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid=,stat=,comm="], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        pid, ppid, state, name = line.split(maxsplit=3)
        table[int(pid)] = ProcessInfo(ppid=int(ppid), state=state[0], name=Path(name).name)
    return table


def process_tree(root: int, table: dict[int, ProcessInfo] | None = None) -> list[int]:
    """``root`` and all its live descendants, parents first.

    The tree is taken before anything is killed: erl_child_setup starts its own session and
    the orphans of a dead VM are re-parented to init, so neither the process group nor the
    tree found afterwards would still lead to them.
    """
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    order = [root] if root in table else []
    for pid in order:  # grows while iterating: breadth-first over a finite table
        order.extend(children.get(pid, []))
    return order


def live_pids(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (a zombie has exited, only its parent has not noticed)."""
    table = process_table()
    return [pid for pid in pids if pid in table and table[pid].state not in ("Z", "X")]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    return bool(live_pids([pid]))


def _wait_until(predicate: Callable[[], bool], *, timeout_seconds: float, what: str) -> None:
    """Poll ``predicate`` with growing pauses; raise ``BrokerError`` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_seconds
    delay = 0.01
    while not predicate():
        if time.monotonic() > deadline:
            raise BrokerError(f"timed out after {timeout_seconds:g}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def epmd_names() -> dict[str, int]:
    """Node names registered with the local epmd and their distribution ports."""
    try:
        with socket.create_connection(("127.0.0.1", _EPMD_PORT), timeout=1.0) as sock:
            sock.sendall(b"\x00\x01n")  # NAMES_REQ: length 1, request 'n'
            data = b""
            while chunk := sock.recv(4096):  # epmd closes after answering
                data += chunk
    except OSError:  # no epmd: nothing is registered
        return {}
    # After epmd's own 4-byte port, one line per node: "name <node> at port <port>".
    names: dict[str, int] = {}
    for line in data[4:].decode(errors="replace").splitlines():
        words = line.split()
        if len(words) == 5 and words[0] == "name" and words[4].isdigit():
            names[words[1]] = int(words[4])
    return names


def port_bindable(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:``port`` now.

    SO_REUSEADDR as the broker's own listeners use it: TIME_WAIT connections left by a killed
    node do not block the restart, while a live listener on the port still does.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- A private node ---------------------------------------------------------------------


def _erlang_binary(value: str) -> str:
    """``value`` as an Erlang binary literal; byte values, so no quoting can go wrong."""
    return "<<" + ",".join(str(byte) for byte in value.encode()) + ">>"


@dataclass(frozen=True)
class NodeConfig:
    """Everything that identifies one private node; the same config restarts the same node."""

    base_dir: Path
    """Holds all of the node's state: data (Mnesia, message stores), logs, cookie, config."""
    node_name: str
    """Erlang node name, ``name@localhost``. The data directory is keyed by it: keep it stable
    for a ``base_dir`` or the node starts empty. It must be unique among running nodes."""
    amqp_port: int
    """AMQP listener on 127.0.0.1."""
    dist_port: int
    """Erlang distribution listener on 127.0.0.1 (rabbitmqctl talks to the node through it)."""
    consumer_timeout_ms: int = DEFAULT_CONSUMER_TIMEOUT_MS
    """Channel closed when a delivery stays unacknowledged this long; must exceed the longest
    task hard time limit or long tasks get redelivered while still running."""
    userid: str = "guest"
    """Default user, created with ``password`` on the node's first boot only."""
    password: str = "guest"
    """Password of ``userid`` (first boot only, like the user)."""
    vhost: str = "/"
    """Default virtual host, created on first boot with full permissions for ``userid``."""

    @property
    def url(self) -> str:
        """The AMQP URL of the default user and vhost."""
        return AmqpAddress(
            "127.0.0.1", self.amqp_port, self.userid, self.password, self.vhost
        ).url()


class RabbitNode:
    """One private ``rabbitmq-server`` process tree: start, SIGKILL, restart, graceful stop.

    Isolation from any other node on the machine (Debian's system node in particular):

    * its own HOME holding its own ``.erlang.cookie``, so neither the system node's cookie nor
      root's is read or created; ``rabbitmqctl`` gets the same HOME;
    * a minimal environment, because RabbitMQ also reads unprefixed variables (``NODENAME``,
      ``CONFIG_FILE``...) and ``/etc/rabbitmq/rabbitmq-env.conf`` (which names the system
      node): every file path RabbitMQ would look up in ``/etc`` points into ``base_dir``;
    * listeners on 127.0.0.1 only, and no plugins (no management port, nothing but AMQP).

    It registers its name with the machine's epmd (starting one, loopback-only, if none runs).
    """

    def __init__(self, config: NodeConfig, install: RabbitInstall | None = None) -> None:
        self.config = config
        self.install = install or find_rabbitmq()
        base = config.base_dir
        self.home = base / "home"
        self.log_dir = base / "log"
        self.mnesia_base = base / "mnesia"
        self.config_file = base / "rabbitmq.config"
        self.plugins_file = base / "enabled_plugins"
        self.plugins_dir = base / "plugins"
        self._core_apps_linked = False
        self.stdout_path = self.log_dir / "stdout.log"
        self.log_path = self.log_dir / f"{config.node_name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    # Files and environment ...............................................................

    def _write_files(self) -> None:
        for directory in (self.home, self.log_dir, self.mnesia_base):
            directory.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():  # kept across restarts: rabbitmqctl must present the same one
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        self.plugins_file.write_text("[].\n")
        source = self.install.plugins_dir
        self._core_apps_linked = source is not None and _link_core_apps(source, self.plugins_dir)
        c = self.config
        # The classic Erlang-term format rather than rabbitmq.conf: user, password and vhost
        # go in as byte-exact binaries, where rabbitmq.conf has its own quoting and comment
        # rules. (It does not save boot time: cuttlefish still runs for the defaults.)
        self.config_file.write_text(
            f"%% Written by server/_broker.py on every start of {c.node_name}.\n"
            "[{rabbit, [\n"
            f'  {{tcp_listeners, [{{"127.0.0.1", {c.amqp_port}}}]}},\n'
            f"  {{consumer_timeout, {c.consumer_timeout_ms}}},\n"
            # Kept at the default: guest may log in over loopback only, which is all we bind.
            '  {loopback_users, [<<"guest">>]},\n'
            f"  {{default_user, {_erlang_binary(c.userid)}}},\n"
            f"  {{default_pass, {_erlang_binary(c.password)}}},\n"
            f"  {{default_vhost, {_erlang_binary(c.vhost)}}},\n"
            '  {default_permissions, [<<".*">>, <<".*">>, <<".*">>]},\n'
            # The file log is what start() quotes on failure; the console copy is redundant.
            "  {log, [{console, [{enabled, false}]}, {file, [{level, info}]}]}\n"
            "]}].\n"
        )

    def _env(self) -> dict[str, str]:
        base = self.config.base_dir
        env = {
            # PATH must find erl; the rest of the caller's environment is left out on purpose.
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",  # the Elixir CLI warns and mangles names on a latin1 VM
            "RABBITMQ_NODENAME": self.config.node_name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.config.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.config.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.mnesia_base),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.config_file),
            # Never created: they stop the node reading /etc/rabbitmq/{conf.d,advanced.config,
            # rabbitmq-env.conf}, which configure the system node.
            "RABBITMQ_CONFIG_FILES": str(base / "conf.d" / "*.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.plugins_file),
            # Only used if this node has to start epmd itself: keep that epmd off the network.
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # Distribution (and rabbitmqctl's own listener) on loopback only.
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        if self._core_apps_linked:
            env["RABBITMQ_PLUGINS_DIR"] = str(self.plugins_dir)
        return env

    # Lifecycle ...........................................................................

    @property
    def url(self) -> str:
        """``amqp://user:pass@127.0.0.1:<port>/<vhost>`` of the default user."""
        return self.config.url

    @property
    def running(self) -> bool:
        """Whether the node's process tree was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """OS pid of the node's Erlang VM (beam.smp), while it runs."""
        if self._process is None:
            return None
        table = process_table()
        for pid in process_tree(self._process.pid, table):
            if table[pid].name.startswith("beam"):
                return pid
        return None

    def processes(self) -> list[int]:
        """Pids of the node's live process tree: shell, VM, erl_child_setup and helpers."""
        return [] if self._process is None else process_tree(self._process.pid)

    def start(self, *, timeout_seconds: float = 60.0) -> None:
        """Launch the node and return once the default user can log in over AMQP.

        Same config, same data: after ``kill()`` or ``stop()`` this recovers durable queues
        and persistent messages. Raises ``BrokerError`` quoting the node's log on failure.
        """
        if self.running:
            raise BrokerError(f"{self.config.node_name} is already running")
        if self._process is not None:  # it died on its own: collect it and its epmd name
            self.kill()
        for port, what in ((self.config.amqp_port, "AMQP"), (self.config.dist_port, "dist")):
            # Checked first: another broker already on the AMQP port would answer our readiness
            # probe while this node fails to bind and exits.
            if not port_bindable(port):
                raise BrokerError(f"{what} port {port} for {self.config.node_name} is taken")
        self._write_files()
        with self.stdout_path.open("ab") as out:
            out.write(f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
            out.flush()
            self._process = subprocess.Popen(
                [str(self.install.server)],
                cwd=self.config.base_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own session: a terminal's Ctrl-C goes to the whole foreground group, and the
                # server script would start its own shutdown racing ours; stop()/kill() own
                # the node's lifetime.
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout_seconds)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, timeout_seconds: float) -> None:
        process = self._process
        assert process is not None
        last_error: BrokerError | None = None

        def ready() -> bool:
            nonlocal last_error
            if process.poll() is not None:
                raise BrokerError(
                    f"{self.config.node_name} exited with {process.returncode} while "
                    f"starting\n{self.diagnostics()}"
                )
            try:
                check_amqp(self.url, timeout_seconds=1.0)
            except BrokerError as exc:
                last_error = exc
                return False
            return True

        try:
            _wait_until(ready, timeout_seconds=timeout_seconds, what=f"{self.url} to log in")
        except BrokerError as exc:
            if process.poll() is not None:
                raise
            raise BrokerError(f"{exc}; last probe: {last_error}\n{self.diagnostics()}") from exc

    def kill(self) -> None:
        """SIGKILL the whole tree (VM, erl_child_setup, inet_gethost, shell) as a crash would.

        Returns once every process is gone and epmd has dropped the name, so ``start()`` can
        follow at once. Never touches epmd itself, which other nodes share.
        """
        if self._process is None:
            return
        table = process_table()
        tree = process_tree(self._process.pid, table)
        # The VM first, so it dies the way a crashed broker does (not by its shell's signal).
        tree.sort(key=lambda pid: not table[pid].name.startswith("beam"))
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(pid, signal.SIGKILL)
        self._reap(tree)

    def _reap(self, tree: list[int]) -> None:
        assert self._process is not None
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"{self.config.node_name}: rabbitmq-server survived SIGKILL") from exc
        _wait_until(
            lambda: not live_pids(tree),
            timeout_seconds=10,
            what=f"processes {tree} of {self.config.node_name} to exit",
        )
        # Matched with our distribution port: a node that failed to start because another
        # holds its name must not wait for that other node to go away.
        short_name = self.config.node_name.split("@")[0]
        _wait_until(
            lambda: epmd_names().get(short_name) != self.config.dist_port,
            timeout_seconds=10,
            what=f"epmd to release the name {short_name!r}",
        )
        self._process = None

    def stop(self, *, timeout_seconds: float = 30.0) -> None:
        """Stop gracefully with ``rabbitmqctl stop``, then SIGKILL whatever is left."""
        if self._process is None:
            return
        tree = process_tree(self._process.pid)
        if self.running:
            try:
                self.ctl("stop", timeout_seconds=timeout_seconds)
                self._process.wait(timeout_seconds)
            except (BrokerError, subprocess.TimeoutExpired):
                pass  # fall through to SIGKILL: stop() must not leave the node running
        for pid in live_pids(tree):
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, signal.SIGKILL)
        self._reap(tree)

    def ctl(self, *args: str, timeout_seconds: float = 30.0) -> str:
        """Run ``rabbitmqctl -n <node> <args>`` with the node's cookie; return its stdout."""
        try:
            result = subprocess.run(
                [str(self.install.ctl), "-n", self.config.node_name, *args],
                env=self._env(),
                cwd=self.config.base_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} timed out") from exc
        if result.returncode != 0:
            raise BrokerError(
                f"rabbitmqctl {' '.join(args)} exited with {result.returncode}: "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result.stdout

    def diagnostics(self) -> str:
        """The tails of the node's log and of its console output, for failure messages."""
        parts = []
        for path in (self.log_path, self.stdout_path):
            try:
                lines = path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
            except OSError:
                lines = ["(missing)"]
            parts.append(f"--- {path} (last {_LOG_TAIL_LINES} lines) ---\n" + "\n".join(lines))
        return "\n".join(parts)


# --- make run ---------------------------------------------------------------------------


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
