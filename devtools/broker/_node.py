"""A private RabbitMQ node: one ``rabbitmq-server`` process tree on its own ports, data
directory, Erlang cookie and config, so it can be killed with SIGKILL and restarted on the
same data without touching any other RabbitMQ node on the machine.

Hand-written rather than on mirakuru: mirakuru signals one process (group) and waits on a
port or an output line, while a node is a tree that leaves its session (erl_child_setup),
must die by SIGKILL VM-first as a crash would, must be waited for until epmd drops its name
before it can restart on the same data, and is ready only once an AMQP *login* succeeds."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devtools._wait import wait_until
from devtools.broker._probe import (
    AmqpAddress,
    BrokerError,
    BrokerNotInstalled,
    check_amqp,
)
from devtools.ports import port_bindable

DEFAULT_CONSUMER_TIMEOUT_MS = 1_800_000
"""RabbitMQ's own default (30 min). Callers running tasks pass their longest hard limit plus
margin: a delivery left unacknowledged longer than this closes the consumer's channel."""

_EPMD_PORT = 4369
"""The node always registers with the default epmd: the environment we build never sets
ERL_EPMD_PORT, so this is where to look for (and wait for the release of) its name."""

_LOG_TAIL_LINES = 40


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
            f"%% Written by devtools/broker/_node.py on every start of {c.node_name}.\n"
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
            wait_until(
                ready,
                timeout_seconds=timeout_seconds,
                what=f"{self.url} to log in",
                error=BrokerError,
            )
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
        wait_until(
            lambda: not live_pids(tree),
            timeout_seconds=10,
            what=f"processes {tree} of {self.config.node_name} to exit",
            error=BrokerError,
        )
        # Matched with our distribution port: a node that failed to start because another
        # holds its name must not wait for that other node to go away.
        short_name = self.config.node_name.split("@")[0]
        wait_until(
            lambda: epmd_names().get(short_name) != self.config.dist_port,
            timeout_seconds=10,
            what=f"epmd to release the name {short_name!r}",
            error=BrokerError,
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
