"""SPEC "Metrics" through a real `sendpipe run`: /metrics counts what the log says happened, /readyz follows the
consumer (503 while the broker refuses the instance, 200 again after), /livez and `sendpipe health --live` do not."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from urllib.parse import unquote, urlsplit

from brokerkit import SENDPIPE, Client, Deployment
from brokers import Broker

from worker.cli.health import http_get

_SAMPLE = re.compile(r"^(\w+)(\{[^}]*\})? (\S+)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(listen: str) -> dict[str, float]:
    status, body = http_get(listen, "/metrics", 5)
    assert status == 200, body
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, line
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def status_of(listen: str, path: str) -> int:
    return http_get(listen, path, 5)[0]


def wait_status(listen: str, path: str, want: int, timeout_s: float) -> None:
    deadline, seen = time.monotonic() + timeout_s, -1
    while time.monotonic() < deadline:
        try:
            seen = status_of(listen, path)
        except OSError:
            seen = -1
        if seen == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path}: {seen}, not {want}, within {timeout_s}s")


def health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SENDPIPE, "health", *args], env=env, capture_output=True, text=True, timeout=30, check=False)


async def test_metrics_counters_and_probes_follow_the_instance(
    broker: Broker, vhost: str, deployment: Deployment, workers: object, client: Client
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    env = deployment.env(vhost, "svc-a", SENDPIPE_METRICS_LISTEN=listen)
    assert callable(workers)
    worker = workers(env)
    worker.wait_for("metrics.listening")
    worker.wait_for("consumer.started")
    wait_status(listen, "/readyz", 200, 10)
    assert status_of(listen, "/livez") == 200
    assert health(env).returncode == 0 and health(env, "--live").returncode == 0

    await client.capture("fabrikam.orders")  # Invoices' delivery key stays unbound: retried, then suspended
    for i in range(3):
        await client.publish("Orders", b"order %d" % i, message_id=f"o{i}")
    await client.publish("Invoices", b"invoice", message_id="inv")
    await client.publish("Ghost", b"ghost", message_id="g")  # its partner certificate is in no store
    worker.wait_for("message.delivered", 3)
    worker.wait_for("message.suspended", 2)
    retried = worker.wait_for("message.retry_scheduled", 2)
    assert {r["error_code"] for r in retried} == {"delivery-unroutable"}

    m = scrape(listen)
    messages = {k: v for k, v in m.items() if k.startswith("sendpipe_messages_total")}
    assert messages == {
        'sendpipe_messages_total{send_port="Orders",outcome="delivered",error_code=""}': 3,
        'sendpipe_messages_total{send_port="Invoices",outcome="retry_scheduled",error_code="delivery-unroutable"}': 2,
        'sendpipe_messages_total{send_port="Invoices",outcome="suspended",error_code="retries-exhausted"}': 1,
        'sendpipe_messages_total{send_port="Ghost",outcome="suspended",error_code="encryption-cert-not-found"}': 1,
    }
    logged = sum(len(worker.events(e)) for e in ("message.delivered", "message.retry_scheduled", "message.suspended"))
    assert m["sendpipe_message_duration_seconds_count"] == logged == 7
    assert m['sendpipe_message_duration_seconds_bucket{le="+Inf"}'] == 7
    assert m["sendpipe_message_duration_seconds_sum"] > 0
    assert m["sendpipe_in_flight_messages"] == 0 and m["sendpipe_in_flight_bytes"] == 0
    assert m["sendpipe_consuming"] == 1 and m["sendpipe_broker_reconnects_total"] == 0
    signer, partner = deployment.signer, deployment.partner
    signing_key = f'sendpipe_certificate_not_after_timestamp_seconds{{thumbprint="{signer.thumbprint}",role="signing"}}'
    assert m[signing_key] == signer.cert.not_valid_after_utc.timestamp()
    encryption_key = (
        f'sendpipe_certificate_not_after_timestamp_seconds{{thumbprint="{partner.thumbprint}",role="encryption"}}'
    )
    assert m[encryption_key] == partner.cert.not_valid_after_utc.timestamp()

    # The broker throws the instance out and refuses it: not ready, still live; then let back in.
    name = unquote(urlsplit(vhost).path[1:])
    await client.conn.close()
    broker.ctl("clear_permissions", "-p", name, "guest")
    broker.ctl("close_all_connections", "-p", name, "metrics test: broker refuses the instance")
    wait_status(listen, "/readyz", 503, 20)
    assert status_of(listen, "/livez") == 200
    unready = health(env)
    assert unready.returncode == 1 and "not consuming" in unready.stdout
    assert health(env, "--ready").returncode == 1
    assert health(env, "--live").returncode == 0
    m = scrape(listen)
    assert m["sendpipe_consuming"] == 0 and m["sendpipe_broker_reconnects_total"] >= 1
    broker.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    wait_status(listen, "/readyz", 200, 30)
    assert scrape(listen)["sendpipe_consuming"] == 1
    assert health(env).returncode == 0

    # Stopped: no listener, so both probes fail.
    worker.signal()
    assert worker.wait() == 0
    gone = health(env, "--live")
    assert gone.returncode == 1 and "no answer" in gone.stdout


def test_a_listener_that_cannot_bind_refuses_the_start(vhost: str, deployment: Deployment, workers: object) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        assert callable(workers)
        worker = workers(deployment.env(vhost, "svc-a", SENDPIPE_METRICS_LISTEN=listen))
        assert worker.wait() == 1
        refused = worker.events("instance.refused")
        assert refused and refused[0]["error_code"] == "settings-invalid" and listen in refused[0]["error"]
        assert not worker.events("consumer.started")
