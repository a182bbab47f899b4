"""Process configuration from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache_sidecar import Config, ConfigError
from cache_sidecar._config import DEFAULT_POLICY_FILE


def test_defaults() -> None:
    config = Config.from_env({})
    assert config.listen_address == "127.0.0.1:50052"
    assert config.memcached_servers == ("127.0.0.1:11211",)
    assert config.policy_file == DEFAULT_POLICY_FILE
    assert config.metrics_port == 9465
    assert config.amqp_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert config.events_enabled
    assert config.events_exchange == "agentic.events"
    assert 0 < config.memcached_timeout_seconds <= 0.1


def test_values_are_parsed() -> None:
    config = Config.from_env(
        {
            "AGENTIC_CACHE_LISTEN_ADDRESS": "127.0.0.1:0",
            "AGENTIC_MEMCACHED_SERVERS": "127.0.0.1:1, 127.0.0.1:2,",
            "AGENTIC_CACHE_POLICY_FILE": "/etc/policy.toml",
            "AGENTIC_CACHE_METRICS_PORT": "0",
            "AGENTIC_CACHE_EVENTS": "off",
            "AGENTIC_MEMCACHED_TIMEOUT_SECONDS": "0.05",
            "AGENTIC_CACHE_BREAKER_FAILURE_THRESHOLD": "5",
        }
    )
    assert config.memcached_servers == ("127.0.0.1:1", "127.0.0.1:2")
    assert config.policy_file == Path("/etc/policy.toml")
    assert config.metrics_port == 0
    assert not config.events_enabled
    assert config.memcached_timeout_seconds == 0.05
    assert config.breaker_failure_threshold == 5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGENTIC_CACHE_LISTEN_ADDRESS", "nohost"),
        ("AGENTIC_MEMCACHED_SERVERS", "127.0.0.1:x"),
        ("AGENTIC_MEMCACHED_SERVERS", ","),
        ("AGENTIC_CACHE_METRICS_PORT", "70000"),
        ("AGENTIC_CACHE_EVENTS", "maybe"),
        ("AGENTIC_MEMCACHED_TIMEOUT_SECONDS", "0"),
        ("AGENTIC_MEMCACHED_IO_THREADS", "-2"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})
