"""Process configuration from the environment."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import core.config
from cache_sidecar import Config, ConfigError
from cache_sidecar._config import DEFAULT_POLICY_FILE, EVENTS_QUEUE_PREFIX, node_set_queue


def test_defaults() -> None:
    config = Config.from_env({})
    assert config.listen_address == "unix:/run/agentic/cache.sock"
    assert config.socket_path == Path("/run/agentic/cache.sock")
    assert not config.insecure_loopback_tcp
    assert config.memcached_servers == ("127.0.0.1:11211",)
    assert config.policy_file == DEFAULT_POLICY_FILE
    assert config.metrics_address == "127.0.0.1:9465"
    assert config.broker_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert config.consumes_events
    assert config.events_enabled
    assert config.events_exchange == "agentic.events"
    assert config.consumed_queue == node_set_queue(["127.0.0.1:11211"])
    assert config.queue_mismatch is None
    assert 0 < config.memcached_timeout_seconds <= 0.1


def test_values_are_parsed() -> None:
    config = Config.from_env(
        {
            "AGENTIC_CACHE_LISTEN_ADDRESS": "127.0.0.1:0",
            "AGENTIC_CACHE_INSECURE_LOOPBACK_TCP": "true",
            "AGENTIC_MEMCACHED_SERVERS": "127.0.0.1:1, 127.0.0.1:2,",
            "AGENTIC_CACHE_POLICY_FILE": "/etc/policy.toml",
            "AGENTIC_CACHE_METRICS_ADDRESS": "127.0.0.1:0",
            "AGENTIC_CACHE_EVENTS": "off",
            "AGENTIC_MEMCACHED_TIMEOUT_SECONDS": "0.05",
            "AGENTIC_CACHE_BREAKER_FAILURE_THRESHOLD": "5",
        }
    )
    assert config.listen_address == "127.0.0.1:0"
    assert config.socket_path is None
    assert config.memcached_servers == ("127.0.0.1:1", "127.0.0.1:2")
    assert config.policy_file == Path("/etc/policy.toml")
    assert config.metrics_address == "127.0.0.1:0", "port 0 picks a free port"
    assert not config.events_enabled
    assert config.memcached_timeout_seconds == 0.05
    assert config.breaker_failure_threshold == 5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGENTIC_CACHE_LISTEN_ADDRESS", "nohost"),
        ("AGENTIC_MEMCACHED_SERVERS", "127.0.0.1:x"),
        ("AGENTIC_MEMCACHED_SERVERS", ","),
        ("AGENTIC_CACHE_METRICS_ADDRESS", "127.0.0.1:70000"),
        ("AGENTIC_CACHE_METRICS_ADDRESS", "9465"),
        ("AGENTIC_CACHE_METRICS_PORT", "70000"),
        ("AGENTIC_CACHE_EVENTS", "maybe"),
        ("AGENTIC_MEMCACHED_TIMEOUT_SECONDS", "0"),
        ("AGENTIC_MEMCACHED_IO_THREADS", "-2"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


def test_metrics_are_off_only_when_the_address_is_set_empty() -> None:
    assert Config.from_env({"AGENTIC_CACHE_METRICS_ADDRESS": ""}).metrics_address == ""
    assert Config.from_env({"AGENTIC_CACHE_METRICS_ADDRESS": " "}).metrics_address == ""
    got = Config.from_env({"AGENTIC_CACHE_METRICS_ADDRESS": "0.0.0.0:9500"}).metrics_address
    assert got == "0.0.0.0:9500"


def test_the_old_metrics_port_is_a_deprecated_alias(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core.config, "_warned", set())
    with caplog.at_level(logging.WARNING):
        config = Config.from_env({"AGENTIC_CACHE_METRICS_PORT": "9500"})
    assert config.metrics_address == "127.0.0.1:9500"
    warnings = [r.getMessage() for r in caplog.records if "METRICS_PORT" in r.getMessage()]
    assert len(warnings) == 1
    assert "AGENTIC_CACHE_METRICS_ADDRESS" in warnings[0]
    assert Config.from_env({"AGENTIC_CACHE_METRICS_PORT": ""}).metrics_address == ""
    both = {"AGENTIC_CACHE_METRICS_PORT": "1", "AGENTIC_CACHE_METRICS_ADDRESS": "127.0.0.1:9600"}
    assert Config.from_env(both).metrics_address == "127.0.0.1:9600", "the new name wins"


def test_one_broker_variable_and_the_old_amqp_url_alias() -> None:
    url = "amqp://u:p@broker:5672//"
    assert Config.from_env({"AGENTIC_BROKER_URL": url}).broker_url == url
    assert Config.from_env({"AGENTIC_AMQP_URL": url}).broker_url == url
    both = {"AGENTIC_AMQP_URL": "amqp://old//", "AGENTIC_BROKER_URL": url}
    assert Config.from_env(both).broker_url == url
    off = Config.from_env({"AGENTIC_BROKER_URL": ""})
    assert not off.consumes_events, "an empty broker URL means no event consumer"
    assert not Config.from_env({"AGENTIC_CACHE_EVENTS": "off"}).consumes_events


def test_the_event_queue_is_derived_from_the_node_set_in_any_order() -> None:
    one = Config.from_env({"AGENTIC_MEMCACHED_SERVERS": "127.0.0.1:1,127.0.0.1:2"})
    same = Config.from_env({"AGENTIC_MEMCACHED_SERVERS": " 127.0.0.1:2, 127.0.0.1:1,127.0.0.1:2"})
    other = Config.from_env({"AGENTIC_MEMCACHED_SERVERS": "127.0.0.1:1,127.0.0.1:3"})
    assert one.consumed_queue == same.consumed_queue
    assert one.consumed_queue != other.consumed_queue
    suffix = one.consumed_queue.removeprefix(EVENTS_QUEUE_PREFIX)
    assert one.consumed_queue.startswith(EVENTS_QUEUE_PREFIX)
    assert len(suffix) == 12
    assert int(suffix, 16) >= 0


def test_an_explicit_queue_wins_and_a_mismatch_names_both_queues() -> None:
    nodes = {"AGENTIC_MEMCACHED_SERVERS": "127.0.0.1:1"}
    derived = node_set_queue(["127.0.0.1:1"])
    explicit = Config.from_env({**nodes, "AGENTIC_CACHE_EVENTS_QUEUE": "fleet.queue"})
    assert explicit.consumed_queue == "fleet.queue"
    warning = explicit.queue_mismatch
    assert warning is not None
    assert "fleet.queue" in warning
    assert derived in warning
    matching = Config.from_env({**nodes, "AGENTIC_CACHE_EVENTS_QUEUE": derived})
    assert matching.consumed_queue == derived
    assert matching.queue_mismatch is None
