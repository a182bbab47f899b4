"""Beat configuration: a frozen dataclass read from the environment once, at start-up.

Each field declares its variable, default and meaning once (``core.config.setting``); the
README's "Beat" table is rendered from these declarations (``make docs``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace

from core.config import (
    DEFAULT_DATABASE_URL,
    ConfigError,
    address,
    number,
    read_env,
    setting,
    upper,
)
from workers._schedule import Entry, parse_schedule

__all__ = ["BeatConfig", "ConfigError"]


DEFAULT_SCHEDULE = "health_probe=1m, cache_warm=10m@30s, backup=1d@2h, retention=1d@3h"
"""Probe every minute; warm every 10 minutes (a node that came back empty is warm again
within 10 minutes); back up at 02:00 UTC and clean up at 03:00 UTC, after the backup."""


@dataclass(frozen=True, slots=True)
class BeatConfig:
    """Everything ``python -m workers.beat`` reads from its environment."""

    schedule: tuple[Entry, ...] = setting(
        "AGENTIC_SCHEDULE",
        parse_schedule(DEFAULT_SCHEDULE),
        parse=parse_schedule,
        shown=f"`{DEFAULT_SCHEDULE}`",
        doc="the periodic jobs, in UTC: `job=EVERY[@OFFSET]` or `job=off` (paused), "
        "comma-separated, durations in `s`, `m`, `h`, `d`; a job fires whenever the Unix time "
        "is OFFSET modulo EVERY (`1d@3h` is 03:00 UTC daily). Jobs: `health_probe` (a "
        "one-step probe task), `cache_warm`, `retention`, `backup` (a verified backup, then "
        "pruning). See [Periodic jobs](#periodic-jobs-the-beat)",
    )
    api_address: str = setting(
        "AGENTIC_BEAT_API_ADDRESS",
        "127.0.0.1:50051",
        parse=address,
        doc="the API server each fire submits its task to (TaskService, like any client)",
    )
    token_file: str = setting(
        "AGENTIC_BEAT_TOKEN_FILE",
        "",
        doc="file holding the bearer token of the beat's service identity, re-read at every "
        "fire (so a token refresher may replace it); it needs the roles of its jobs' RPCs "
        "(`health_probe`: SubmitProbe; `cache_warm`, `retention`, `backup`: an Administrator). "
        "Unset: calls carry no token (an API server with "
        "`AGENTIC_AUTH_ENABLED=false`)",
    )
    api_ca_file: str = setting(
        "AGENTIC_BEAT_API_CA_FILE",
        "",
        doc="CA of the API server's certificate: set it when the API server speaks TLS",
    )
    database_url: str = setting(
        "DATABASE_URL",
        DEFAULT_DATABASE_URL,
        doc="the API server's database, where the beats compete for the `scheduler_leases` "
        "row (the server migrates it)",
    )
    lease_ttl_seconds: float = setting(
        "AGENTIC_BEAT_LEASE_TTL_SECONDS",
        10.0,
        parse=number(positive=True),
        doc="the leader's lease lasts this long unless renewed: after a leader died (kill -9) "
        "a standby schedules within this plus `AGENTIC_BEAT_RENEW_SECONDS`",
    )
    renew_seconds: float = setting(
        "AGENTIC_BEAT_RENEW_SECONDS",
        3.0,
        parse=number(positive=True),
        doc="how often the leader renews its lease and a standby tries to take it; at most "
        "half the TTL, so one failed renewal does not cost the lease",
    )
    submit_timeout_seconds: float = setting(
        "AGENTIC_BEAT_SUBMIT_TIMEOUT_SECONDS",
        5.0,
        parse=number(positive=True),
        doc="deadline of one fire's submit, retries included; a fire that failed is tried "
        "again (same request_id) with backoff until it is submitted or a newer one is due",
    )
    holder: str = setting(
        "AGENTIC_BEAT_NAME",
        "",
        shown="(`beat@<host>:<pid>`)",
        doc="this process's name in the lease row (who leads), followed there by `/` and a "
        "random suffix, so that two processes given one name still count as two",
    )
    metrics_address: str = setting(
        "AGENTIC_BEAT_METRICS_ADDRESS",
        "127.0.0.1:9466",
        parse=address,
        when_empty="",
        doc="host:port of the Prometheus `/metrics` endpoint (port 0 picks a free port, "
        "reported in the ready file); set but empty disables it",
    )
    ready_file: str = setting(
        "AGENTIC_READY_FILE",
        "",
        doc='`{"pid": …, "holder": …, "metrics_port": …}` is written here once running '
        "(leader or standby)",
    )
    log_level: str = setting("AGENTIC_LOG_LEVEL", "INFO", parse=upper, doc="Python logging level")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, jobs: frozenset[str] | None = None
    ) -> BeatConfig:
        """Read and check every setting; raise ConfigError naming the bad variable.

        ``jobs``: the job names the beat knows; a schedule naming another is refused.
        """
        config = read_env(cls, env)
        if config.renew_seconds * 2 > config.lease_ttl_seconds:
            raise ConfigError(
                f"AGENTIC_BEAT_RENEW_SECONDS={config.renew_seconds:g} must be at most half of "
                f"AGENTIC_BEAT_LEASE_TTL_SECONDS={config.lease_ttl_seconds:g}"
            )
        if jobs is not None:
            unknown = sorted({entry.job for entry in config.schedule} - jobs)
            if unknown:
                raise ConfigError(
                    f"AGENTIC_SCHEDULE names unknown jobs {unknown}; known: {sorted(jobs)}"
                )
        if not config.holder:
            config = replace(config, holder=f"beat@{socket.gethostname()}:{os.getpid()}")
        return config
