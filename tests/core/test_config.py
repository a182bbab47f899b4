"""The one configuration mechanism: declarations, checks and deprecated aliases."""

from __future__ import annotations

import dataclasses
import logging

import pytest

import core.config
from cache_sidecar import Config
from core.config import ConfigError, settings
from server._config import ServerConfig
from workers._config import WorkerConfig

_JWKS = {"AGENTIC_AUTH_JWKS": "/keys/jwks.json"}


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.config, "_warned", set())


def _groups(cls: type) -> list[str]:
    """Fields holding a group of settings declared once elsewhere and read with the rest
    (``core.backup.BackupConfig`` in the server's and the worker's configuration)."""
    return [
        f.name
        for f in dataclasses.fields(cls)
        if isinstance(f.default_factory, type) and settings(f.default_factory)
    ]


@pytest.mark.parametrize("cls", [ServerConfig, WorkerConfig, Config])
def test_every_field_is_a_documented_setting_with_a_unit_where_it_has_one(cls: type) -> None:
    declared = settings(cls)
    assert len(declared) + len(_groups(cls)) == len(dataclasses.fields(cls))
    for name, _default, spec in declared:
        assert spec.doc, f"{spec.env} has no doc"
        assert spec.env == "DATABASE_URL" or spec.env.startswith("AGENTIC_")
        if spec.env.endswith("_SECONDS"):
            assert name.endswith("_seconds"), name
        if spec.env.endswith("_BYTES"):
            assert name.endswith("_bytes"), name


def test_defaults_are_the_declared_ones() -> None:
    assert ServerConfig.from_env(_JWKS) == ServerConfig(auth_jwks="/keys/jwks.json")
    assert WorkerConfig.from_env({}) == WorkerConfig()
    assert Config.from_env({}) == Config()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AGENTIC_DB_POOL_SIZE": "lots"}, "AGENTIC_DB_POOL_SIZE='lots' is not an integer"),
        ({"AGENTIC_DB_POOL_SIZE": "0"}, "AGENTIC_DB_POOL_SIZE='0' must be >= 1"),
        ({"AGENTIC_WATCH_HEARTBEAT_SECONDS": "0"}, "AGENTIC_WATCH_HEARTBEAT_SECONDS"),
        ({"AGENTIC_AUTH_ENABLED": "perhaps"}, "AGENTIC_AUTH_ENABLED"),
        ({"AGENTIC_METRICS_ADDRESS": "9464"}, "AGENTIC_METRICS_ADDRESS"),
        ({"AGENTIC_TLS_CERT_FILE": "/c.pem"}, "set both AGENTIC_TLS_CERT_FILE"),
        ({"AGENTIC_CACHE_CLIENT_KEY_FILE": "/k.pem"}, "AGENTIC_CACHE_CLIENT_CERT_FILE"),
        ({"AGENTIC_TLS_CLIENT_CA_FILE": "/ca.pem"}, "AGENTIC_TLS_CLIENT_CA_FILE needs"),
    ],
)
def test_bad_server_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ServerConfig.from_env({**_JWKS, **env})


def test_authentication_needs_a_key_set() -> None:
    with pytest.raises(ConfigError, match="AGENTIC_AUTH_JWKS"):
        ServerConfig.from_env({})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AGENTIC_CLAIM_LEASE_SECONDS": "0.5"}, "AGENTIC_CLAIM_LEASE_SECONDS"),
        ({"AGENTIC_DB_POOL_SIZE": "1"}, "AGENTIC_DB_POOL_SIZE='1' must be >= 2"),
        ({"AGENTIC_WORKER_CONCURRENCY": "0"}, "AGENTIC_WORKER_CONCURRENCY"),
    ],
)
def test_bad_worker_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        WorkerConfig.from_env(env)


def test_one_broker_variable_with_switches_per_use() -> None:
    url = "amqp://u:p@broker:5672//"
    config = ServerConfig.from_env({**_JWKS, "AGENTIC_BROKER_URL": url})
    assert (config.tasks_broker_url, config.events_broker_url) == (url, url)
    events_only = ServerConfig.from_env(
        {**_JWKS, "AGENTIC_BROKER_URL": url, "AGENTIC_TASKS_ENABLED": "false"}
    )
    assert (events_only.tasks_broker_url, events_only.events_broker_url) == ("", url)
    tasks_only = ServerConfig.from_env(
        {**_JWKS, "AGENTIC_BROKER_URL": url, "AGENTIC_EVENTS_ENABLED": "false"}
    )
    assert (tasks_only.tasks_broker_url, tasks_only.events_broker_url) == (url, "")
    none = ServerConfig.from_env({**_JWKS, "AGENTIC_BROKER_URL": ""})
    assert (none.tasks_broker_url, none.events_broker_url) == ("", "")
    assert WorkerConfig.from_env({"AGENTIC_BROKER_URL": url}).broker_url == url


def test_the_old_events_url_is_a_deprecated_alias(caplog: pytest.LogCaptureFixture) -> None:
    url = "amqp://u:p@broker:5672//"
    with caplog.at_level(logging.WARNING):
        config = ServerConfig.from_env({**_JWKS, "AGENTIC_EVENTS_URL": url})
        ServerConfig.from_env({**_JWKS, "AGENTIC_EVENTS_URL": url})
    assert config.broker_url == url
    assert config.events_enabled
    warnings = [r.getMessage() for r in caplog.records if "AGENTIC_EVENTS_URL" in r.getMessage()]
    assert len(warnings) == 1, "one warning per process"
    assert "AGENTIC_BROKER_URL" in warnings[0]
    off = ServerConfig.from_env({**_JWKS, "AGENTIC_EVENTS_URL": ""})
    assert not off.events_enabled, "an empty old URL switched events off, and still does"
    assert off.tasks_broker_url == ServerConfig().broker_url, "but not the task pipeline"
    both = ServerConfig.from_env(
        {**_JWKS, "AGENTIC_EVENTS_URL": "amqp://old//", "AGENTIC_BROKER_URL": url}
    )
    assert both.broker_url == url, "the new name wins"
