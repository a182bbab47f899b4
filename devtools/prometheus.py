"""A local Prometheus on loopback: ``make run PROMETHEUS=1`` and the live alert drill.

``Prometheus(PrometheusConfig(...)).start()`` writes a ``prometheus.yml`` that scrapes the
given targets and loads the given rule files, starts Debian's ``prometheus`` binary (the
same package whose ``promtool`` unit-tests the rules) on ``127.0.0.1:<port>`` with its
storage in the work directory, and returns once ``/-/ready`` answers. ``alerts()``,
``query()``, ``rules()`` and ``targets()`` read its HTTP API; ``stop()`` ends it.

``write_drill_rules`` copies a rule file with every ``for:`` shortened, so that a drill sees
an alert fire within seconds of its condition instead of after minutes; the expressions,
labels and annotations are the file's own.

Hand-written rather than a Prometheus client library: starting the binary and four GETs of
its documented JSON API are all a drill and ``make run`` need.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

# PyYAML is pinned in requirements.lock; its stubs are not.
import yaml  # type: ignore[import-untyped]

from devtools._wait import wait_until
from devtools.ports import free_port

__all__ = ["Prometheus", "PrometheusConfig", "PrometheusError", "write_drill_rules"]

HOST = "127.0.0.1"
"""Loopback only: a development Prometheus has no authentication."""
_HTTP_TIMEOUT_SECONDS = 5.0
_MAX_SCRAPE_TIMEOUT_SECONDS = 10.0  # Prometheus's own default, capped by the interval


class PrometheusError(RuntimeError):
    """prometheus is missing, did not become ready, or its API answered an error."""


@dataclass(frozen=True)
class PrometheusConfig:
    """What the local Prometheus scrapes and evaluates, and where it keeps its data."""

    scrape_targets: Mapping[str, Sequence[str]]
    """Job name -> the ``host:port`` of each process of the job (``/metrics`` is scraped)."""
    rule_files: Sequence[Path]
    """Rule files to load (alerting and recording rules)."""
    workdir: Path
    """prometheus.yml, the TSDB (``data/``) and the log (``prometheus.log``) go here."""
    scrape_interval_seconds: float = 15.0
    """How often every target is scraped (the scrape timeout is this, at most 10 s)."""
    evaluation_interval_seconds: float = 15.0
    """How often the rules are evaluated."""
    port: int = 0
    """The HTTP port on 127.0.0.1; 0 picks a free one."""
    extra_args: Sequence[str] = field(default_factory=tuple)
    """More command-line flags for the binary."""


def _duration(seconds: float) -> str:
    """A Prometheus duration; milliseconds keep fractions (``0.5`` -> ``500ms``)."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"a Prometheus duration must be positive, not {seconds!r} s")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusError(
            "prometheus is not installed: run `make system-deps` (as root it installs "
            "Debian's prometheus package), or `sudo apt-get install --no-install-recommends "
            "prometheus`"
        )
    return binary


def config_document(config: PrometheusConfig) -> dict[str, Any]:
    """The ``prometheus.yml`` of ``config``, as a document."""
    scrape_timeout = min(config.scrape_interval_seconds, _MAX_SCRAPE_TIMEOUT_SECONDS)
    return {
        "global": {
            "scrape_interval": _duration(config.scrape_interval_seconds),
            "scrape_timeout": _duration(scrape_timeout),
            "evaluation_interval": _duration(config.evaluation_interval_seconds),
        },
        "rule_files": [str(Path(path).resolve()) for path in config.rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in config.scrape_targets.items()
        ],
    }


class Prometheus:
    """One Prometheus process on 127.0.0.1; ``start`` it, read its API, ``stop`` it."""

    def __init__(self, config: PrometheusConfig) -> None:
        self.config = config
        self.port = config.port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.config_file = config.workdir / "prometheus.yml"
        self.log_path = config.workdir / "prometheus.log"

    @property
    def url(self) -> str:
        """The base URL of its web UI and API."""
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        """What the process wrote so far (empty before it started)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, *, timeout_seconds: float = 30.0) -> Prometheus:
        """Write the configuration, start the binary and wait for ``/-/ready``."""
        binary = _binary()
        self.config.workdir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(config_document(self.config), sort_keys=False))
        args = [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.config.workdir / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
            *self.config.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(
                self._ready,
                timeout_seconds=timeout_seconds,
                what=f"prometheus at {self.url} to be ready",
                error=PrometheusError,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise PrometheusError(
                f"prometheus exited with {self.process.returncode} while starting:\n{self.log()}"
            )
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return int(response.status) == 200
        except (OSError, urllib.error.URLError):
            return False  # not listening yet, or 503 while the TSDB opens

    def exited(self) -> bool:
        """Whether it was started and has exited since."""
        return self.process is not None and self.process.poll() is not None

    def stop(self, *, timeout_seconds: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout_seconds``, then kill."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> Prometheus:
        return self if self.process is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the HTTP API (https://prometheus.io/docs/prometheus/latest/querying/api/) ------

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; its ``data`` (a PrometheusError when it is not success)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"{self.url}/api/v1/{path}{query}"
        try:
            with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_SECONDS) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400 and 422 carry the error as JSON
            detail = exc.read().decode(errors="replace")
            raise PrometheusError(f"GET {url}: {exc.code} {detail}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"GET {url}: {body}")
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """The active alerts (pending and firing): ``labels``, ``state``, ``activeAt``, ..."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: for a vector, ``[{"metric": {...}, "value": [t, v]}]``."""
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups: ``name``, ``file``, ``rules`` (with health and state)."""
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets: ``labels``, ``health`` (up/down/unknown), ``lastError``."""
        targets: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return targets


def write_drill_rules(source: Path, dest: Path, *, for_seconds: float | None = 1.0) -> Path:
    """Copy the rule file ``source`` to ``dest`` with every ``for:`` set to ``for_seconds``
    (removed when None: the alert fires on the first evaluation that finds it true).

    Keeping a short ``for`` still takes each alert through pending to firing, as in
    production; a drill then waits seconds where the real rule waits minutes.
    """
    document = yaml.safe_load(source.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" not in rule:
                continue
            if for_seconds is None:
                del rule["for"]
            else:
                rule["for"] = _duration(for_seconds)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(document, sort_keys=False))
    return dest
