"""The Prometheus exposition of a host instance (worker/host/metrics.py) and the counters behind it (Stats)."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pki import Issued, StoreFactory

from worker.cli.health import http_get
from worker.errors import Code
from worker.host import metrics
from worker.host.budget import ByteBudget
from worker.host.stats import DURATION_BUCKETS_S, MAX_PORT_LABELS, OTHER_PORT, Stats
from worker.pipeline.catalogue import load_config
from worker.pipeline.runtime import Runtime
from worker.settings import parse_listen, probe_address

# One sample line of the text format: name, optional {labels}, a value (no timestamps here).
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$')


def _config(tmp_path: Path, signer: Issued, partner: Issued, missing_partner: bool = False) -> Path:
    partner_tp = "AB" * 20 if missing_partner else partner.thumbprint
    path = tmp_path / "sendpipe.toml"
    path.write_text(f"""
[group]
name = "Contoso"
signing_thumbprint = "{signer.thumbprint}"

[pipelines.SignAndEncrypt]
encode = [ {{ component = "mime_smime_encoder", signature_type = "BlobSign", enable_encryption = true }} ]

[send_ports.Orders]
host = "SendHost"
pipeline = "SignAndEncrypt"
encryption_thumbprint = "{partner_tp}"
delivery_key = "fabrikam.orders"
""")
    return path


@dataclass
class FakeInstance:
    """What metrics.Observed reads, without a broker."""

    runtime: Runtime
    host: str = "SendHost"
    stats: Stats = field(default_factory=Stats)
    budget: ByteBudget = field(default_factory=lambda: ByteBudget(1 << 20, small_bytes=1024))
    reconnects: int = 0
    is_consuming: bool = True

    @property
    def consuming(self) -> bool:
        return self.is_consuming


@pytest.fixture
def instance(tmp_path: Path, make_store: StoreFactory, signer_rsa2048: Issued, partner: Issued) -> FakeInstance:
    store = make_store("svc-a", personal=[signer_rsa2048], other_people=[partner])
    config = load_config(_config(tmp_path, signer_rsa2048, partner))
    return FakeInstance(Runtime.build(config, store, "SendHost"))


def parse(text: str) -> dict[str, dict[str, float]]:
    """Every sample, checked line by line against the format: {family-or-sample name: {labels: value}}."""
    assert text.endswith("\n")
    samples: dict[str, dict[str, float]] = {}
    typed: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram"}
            assert name not in typed, f"{name} typed twice"
            typed[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        assert any(name == t or name.startswith(t + "_") for t in typed), f"{name} has no TYPE before it"
        samples.setdefault(name, {})[labels] = float(value)
    return samples


def test_escape_label_values() -> None:
    assert metrics.escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert metrics.escape_label("plain-port.1") == "plain-port.1"


def test_format_value() -> None:
    assert metrics.format_value(3) == "3"
    assert metrics.format_value(0.25) == "0.25"
    assert metrics.format_value(float("inf")) == "+Inf"
    assert metrics.format_value(float("nan")) == "NaN"


def test_exposition_every_spec_family(instance: FakeInstance, signer_rsa2048: Issued, partner: Issued) -> None:
    instance.stats.started()
    instance.stats.finished("message.delivered", 3.0, send_port="Orders")
    instance.budget.in_use = 1234
    instance.reconnects = 2
    samples = parse(metrics.exposition(instance))
    assert samples["sendpipe_messages_total"] == {'{send_port="Orders",outcome="delivered",error_code=""}': 1.0}
    assert samples["sendpipe_in_flight_messages"] == {"": 0.0}
    assert samples["sendpipe_in_flight_bytes"] == {"": 1234.0}
    assert samples["sendpipe_consuming"] == {"": 1.0}
    assert samples["sendpipe_broker_reconnects_total"] == {"": 2.0}
    certs = samples["sendpipe_certificate_not_after_timestamp_seconds"]
    signing, encryption = signer_rsa2048.cert.not_valid_after_utc, partner.cert.not_valid_after_utc
    assert certs == {
        f'{{thumbprint="{signer_rsa2048.thumbprint}",role="signing"}}': signing.timestamp(),
        f'{{thumbprint="{partner.thumbprint}",role="encryption"}}': encryption.timestamp(),
    }


def test_histogram_is_cumulative_with_inf_sum_and_count(instance: FakeInstance) -> None:
    stats = instance.stats
    for ms in (1.0, 5.0, 40.0, 40.0, 120_000.0):  # 0.001 s, exactly the 0.005 bound, 0.04 s twice, 120 s
        stats.started()
        stats.finished("message.delivered", ms, send_port="Orders")
    samples = parse(metrics.exposition(instance))
    buckets = samples["sendpipe_message_duration_seconds_bucket"]
    assert list(buckets) == [f'{{le="{metrics.format_value(b)}"}}' for b in (*DURATION_BUCKETS_S, float("inf"))]
    assert buckets['{le="0.005"}'] == 2  # le is inclusive
    assert buckets['{le="0.01"}'] == 2
    assert buckets['{le="0.05"}'] == 4
    assert buckets['{le="60"}'] == 4
    assert buckets['{le="+Inf"}'] == 5
    values = list(buckets.values())
    assert values == sorted(values)
    assert samples["sendpipe_message_duration_seconds_count"] == {"": 5}
    assert samples["sendpipe_message_duration_seconds_sum"][""] == pytest.approx(120.086)


def test_outcome_labels_and_codes(instance: FakeInstance) -> None:
    stats = instance.stats
    metrics.limit_port_labels(instance)
    for event, port, code in [
        ("message.retry_scheduled", "Orders", Code.DELIVERY_UNROUTABLE),
        ("message.suspended", "Orders", Code.RETRIES_EXHAUSTED),
        ("message.suspended", 'evil"\nport', Code.UNKNOWN_SEND_PORT),  # a producer's routing key
        ("message.suspended", "Orders", "not-a-code"),
        (None, "Orders", None),  # unsettled: no outcome
    ]:
        stats.started()
        stats.finished(event, 1.0, send_port=port, error_code=code)
    samples = parse(metrics.exposition(instance))
    assert samples["sendpipe_messages_total"] == {
        '{send_port="Orders",outcome="retry_scheduled",error_code="delivery-unroutable"}': 1,
        '{send_port="Orders",outcome="suspended",error_code="internal-error"}': 1,
        '{send_port="Orders",outcome="suspended",error_code="retries-exhausted"}': 1,
        f'{{send_port="{metrics.UNKNOWN_PORT}",outcome="suspended",error_code="unknown-send-port"}}': 1,
    }
    assert samples["sendpipe_message_duration_seconds_count"] == {"": 4}


def test_unfiltered_port_labels_are_capped() -> None:
    stats = Stats()
    for i in range(MAX_PORT_LABELS + 10):
        stats.started()
        stats.finished("message.delivered", 1.0, send_port=f"p{i}")
    ports = {p for p, _, _ in stats.outcomes}
    assert len(ports) == MAX_PORT_LABELS + 1 and OTHER_PORT in ports
    assert stats.outcomes[(OTHER_PORT, "delivered", "")] == 10


def test_readiness(tmp_path: Path, make_store: StoreFactory, instance: FakeInstance, partner: Issued) -> None:
    assert metrics.ready(instance) == (True, "signing certificate usable")
    instance.is_consuming = False
    ok, why = metrics.ready(instance)
    assert not ok and "not consuming" in why
    assert parse(metrics.exposition(instance))["sendpipe_consuming"] == {"": 0}
    # Consuming, but the store holds no signing certificate (it was removed and the store reloaded).
    config = instance.runtime.config
    bare = make_store("svc-bare", other_people=[partner])
    unready = FakeInstance(Runtime.build(config, bare, "SendHost"))
    ok, why = metrics.ready(unready)
    assert not ok and config.group.signing_thumbprint in why
    assert 'role="signing"' not in metrics.exposition(unready)  # no certificate, no not_after sample


def test_listen_setting_parses() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert probe_address("0.0.0.0:9464") == ("127.0.0.1", 9464)
    for bad in ("9464", "host:", "host:0", "host:70000", ":9464", "h:p"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_http_responder(instance: FakeInstance) -> None:
    port = free_port()
    server = await metrics.start(instance, f"127.0.0.1:{port}")
    listen = f"127.0.0.1:{port}"

    def get(path: str) -> tuple[int, str]:
        return http_get(listen, path, 5)

    async def call(path: str) -> tuple[int, str]:
        return await asyncio.to_thread(get, path)

    async with server:
        status, body = await call("/metrics")
        assert status == 200 and "sendpipe_consuming 1\n" in body
        assert (await call("/livez"))[0] == 200
        assert (await call("/readyz"))[0] == 200
        instance.is_consuming = False
        status, body = await call("/readyz")
        assert status == 503 and body.startswith("not ready: not consuming")
        assert (await call("/livez"))[0] == 200
        assert (await call("/nope"))[0] == 404
        # Garbage and an oversized request line get an answer or a close, and the listener keeps serving.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"X" * 20000 + b"\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /metrics HTTP/1.1\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 405 ")
        writer.close()
        assert (await call("/metrics"))[0] == 200


async def test_listener_that_cannot_bind_is_a_settings_error(instance: FakeInstance) -> None:
    port = free_port()
    server = await metrics.start(instance, f"127.0.0.1:{port}")
    async with server:
        with pytest.raises(Exception, match=f"SENDPIPE_METRICS_LISTEN=127.0.0.1:{port}: cannot listen") as err:
            await metrics.start(instance, f"127.0.0.1:{port}")
        assert getattr(err.value, "code", None) == Code.SETTINGS_INVALID
