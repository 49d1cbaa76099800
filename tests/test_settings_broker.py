"""Broker settings (SPEC "Settings"): the node list, URLs that do not parse, unknown and mistyped variables."""

from __future__ import annotations

import os
import re

import pytest

from worker import settings
from worker.errors import ConfigError
from worker.settings import BrokerSettings, InstanceSettings


def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SENDPIPE_"):
            monkeypatch.delenv(name)


def test_a_comma_separated_list_is_the_cluster_nodes_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("SENDPIPE_AMQP_URL", "amqp://u:p@h1:5682/v, amqp://u:p@h2:5683/v,amqps://u:p@h3/v")
    loaded = settings.load(BrokerSettings)
    assert loaded.amqp_urls == ["amqp://u:p@h1:5682/v", "amqp://u:p@h2:5683/v", "amqps://u:p@h3/v"]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("amqp://u:s3cret@h1:5682,h2:5683/", "not a full amqp:// or amqps:// URL"),  # the traceback of finding 6
        ("amqp://u:s3cret@h1:5682/,", "empty URL"),
        ("http://u:s3cret@h1/", "not a full"),
        ("amqp://u:s3cret@:5672/", "no host"),
        ("amqp://u:s3cret@h1:99999/", "port"),
        ("amqp://u:s3cret@h1:56x2/", "port is not a number"),
    ],
)
def test_a_url_that_does_not_parse_names_the_variable_never_the_password(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("SENDPIPE_AMQP_URL", value)
    with pytest.raises(ConfigError) as err:
        settings.load(BrokerSettings)
    assert "SENDPIPE_AMQP_URL" in err.value.message and why in err.value.message
    assert "s3cret" not in err.value.message


def test_a_mistyped_url_variable_never_falls_back_to_the_default_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("SENDPIPE_AMQP_URLS", "amqp://u:p@h1/")
    with pytest.raises(ConfigError, match="SENDPIPE_AMQP_URL is not set but SENDPIPE_AMQP_URLS is"):
        settings.load(BrokerSettings)
    assert settings.unknown_variables() == ["SENDPIPE_AMQP_URLS"]
    monkeypatch.setenv("SENDPIPE_AMQP_URL", "amqp://u:p@h1/")
    assert settings.load(BrokerSettings).amqp_urls == ["amqp://u:p@h1/"]


def test_unknown_variables_are_named_and_known_ones_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    for name in ("SENDPIPE_HOST", "SENDPIPE_PREFETCH_COUNT", "SENDPIPE_BROKER_MAX_MESSAGE_BYTES"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("SENDPIPE_PREFETCH", "4")
    assert settings.unknown_variables() == ["SENDPIPE_PREFETCH"]


def test_the_broker_message_limit_defaults_to_rabbitmq_4s() -> None:
    assert BrokerSettings().broker_max_message_bytes == 16 * 1024 * 1024


def test_the_in_flight_budget_follows_the_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "memory_limit_bytes", lambda: 600 << 20)
    assert InstanceSettings().in_flight_budget == (600 << 20) // 32
    monkeypatch.setattr(settings, "memory_limit_bytes", lambda: 64 << 30)
    assert InstanceSettings().in_flight_budget == 512 << 20
    assert InstanceSettings(max_in_flight_bytes=1234).in_flight_budget == 1234


def test_default_instance_names_differ_with_the_same_hostname_and_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicas on one host network (`network_mode: host`): one hostname, each its container's pid 1."""
    monkeypatch.delenv("SENDPIPE_HOST_INSTANCE", raising=False)
    monkeypatch.setattr("socket.gethostname", lambda: "node7")
    monkeypatch.setattr("os.getpid", lambda: 1)
    names = {InstanceSettings().host_instance for _ in range(20)}
    assert len(names) == 20
    assert all(re.fullmatch(r"node7-1-[0-9a-f]{6}", n) for n in names), names
    monkeypatch.setenv("SENDPIPE_HOST_INSTANCE", "sendhost-a-2")
    assert InstanceSettings().host_instance == "sendhost-a-2"
