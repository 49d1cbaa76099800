"""Operator features against the real broker: check, suspended list/show/resume/discard, hot rotation, health."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from brokerkit import SENDPIPE, Client, Deployment
from brokers import broker_of
from pki import write_personal_pfx
from smime_check import unwrap


def sendpipe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SENDPIPE, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_check_prints_a_table_and_fails_on_missing_certificates(vhost: str, deployment: Deployment) -> None:
    ok = sendpipe(deployment.env(vhost, "svc-a"), "check")
    assert ok.returncode == 1  # port Ghost names a certificate no store holds
    lines = ok.stdout.splitlines()
    assert lines[1].split() == ["level", "role", "for", "thumbprint", "looked", "in", "status"]
    signing = next(line for line in lines if " signing " in line)
    assert signing.startswith("OK") and deployment.signer.thumbprint in signing and "svc-a/personal" in signing
    ghost = next(line for line in lines if " Ghost " in line)
    assert ghost.startswith("ERROR") and ghost.rstrip().endswith("missing") and "svc-a/other-people" in ghost
    as_json = json.loads(sendpipe(deployment.env(vhost, "svc-c"), "check", "--json").stdout)
    assert as_json["ok"] is False
    codes = {f["subject"]: f["code"] for f in as_json["findings"]}
    assert codes["Contoso"] == "signing-cert-not-found"
    assert codes["Orders"] is None  # found: the partner certificate is in svc-c's other-people
    # Without the Ghost port every certificate is there: exit 0, and the size ceilings are printed.
    deployment.config.write_text(deployment.config.read_text().replace("AB" * 20, deployment.partner.thumbprint))
    passed = sendpipe(deployment.env(vhost, "svc-a"), "check")
    assert passed.returncode == 0
    assert "largest payload per send port under SENDPIPE_BROKER_MAX_MESSAGE_BYTES (16777216 bytes)" in passed.stdout
    ceilings = json.loads(sendpipe(deployment.env(vhost, "svc-a"), "check", "--json").stdout)["largest_payload_bytes"]
    assert 6 << 20 < ceilings["Orders"] < 6.5 * (1 << 20)  # BlobSign + AES256, base64: 2.56x (README)
    assert ceilings["Invoices"] > ceilings["Orders"]  # ClearSign + encryption, binary body part: 1.37x


async def test_resume_after_the_operator_fixed_the_store(
    vhost: str, deployment: Deployment, workers: Any, client: Client, tmp_path: Path
) -> None:
    env = deployment.env(vhost, "svc-b", SENDPIPE_RELOAD_INTERVAL_S="0.3")
    partner_file = deployment.store_root / "svc-b" / "other-people" / "fabrikam.cer"
    saved = partner_file.read_bytes()
    partner_file.unlink()
    worker = workers(env)
    worker.wait_for("consumer.started")
    capture = await client.capture()
    for i in range(3):
        await client.publish("Orders", b"order %d" % i, message_id=f"s{i}")
    worker.wait_for("message.suspended", 3)
    listing = sendpipe(env, "suspended", "list")
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()[2:-1]]
    assert sorted(r[0] for r in rows) == ["s0", "s1", "s2"]
    assert {r[1] for r in rows} == {"Orders"} and {r[2] for r in rows} == {"encryption-cert-not-found"}
    shown = json.loads(sendpipe(env, "suspended", "show", "s1", "--save-body", str(tmp_path / "b")).stdout)
    assert shown["headers"]["sendpipe-error-code"] == "encryption-cert-not-found" and shown["size"] == 7
    assert (tmp_path / "b").read_bytes() == b"order 1"
    assert sendpipe(env, "suspended", "discard", "s2").returncode == 0
    assert sendpipe(env, "suspended", "show", "nope").returncode == 1
    # The operator restores the certificate; the running instance reloads its store by itself.
    partner_file.write_bytes(saved)
    worker.wait_for("store.reloaded")
    resumed = sendpipe(env, "suspended", "resume", "--all")
    assert resumed.returncode == 0 and resumed.stdout.count("resumed") == 2
    got = await client.drain(capture.name, 2)
    assert sorted(str(m.message_id) for m in got) == ["s0", "s1"]
    for m in got:
        result = unwrap(
            m.body,
            tmp_path / str(m.message_id),
            ca_pem=deployment.pki.ca_pem,
            recip_cert=deployment.partner_cert,
            recip_key=deployment.partner_key,
        )
        assert result.payload == b"order %d" % int(str(m.message_id)[1:])
        assert "sendpipe-error-code" not in m.headers
    assert await client.count("sendpipe.suspended.SendHost") == 0


async def test_signing_certificate_rotation_without_restart(
    vhost: str, deployment: Deployment, workers: Any, client: Client, tmp_path: Path
) -> None:
    env = deployment.env(vhost, "svc-a", SENDPIPE_RELOAD_INTERVAL_S="0.3")
    worker = workers(env)
    worker.wait_for("consumer.started")
    capture = await client.capture()
    await client.publish("Orders", b"before", message_id="before")
    (old,) = await client.drain(capture.name, 1)
    assert old.headers["sendpipe-signer-thumbprint"] == deployment.signer.thumbprint
    # A bad config is rejected and the old one stays in force.
    good = deployment.config.read_text()
    deployment.config.write_text(good.replace('encryption_algorithm = "AES256"', 'encryption_algorithm = "DES3"'))
    rejected = worker.wait_for("config.rejected")[0]
    assert rejected["error_code"] == "algorithm-not-supported"
    await client.publish("Orders", b"during", message_id="during")
    (during,) = await client.drain(capture.name, 1)
    assert during.headers["sendpipe-signer-thumbprint"] == deployment.signer.thumbprint
    # Rotation: a new PKCS#12 dropped into personal/, then the thumbprint changed in the config.
    new = deployment.pki.issue("Contoso group signing 2027", usage="sign", key_slot="rotated")
    write_personal_pfx(
        deployment.store_root, "svc-a", "group-signing-2027", new, env["SENDPIPE_STORE_PASSWORD"].encode()
    )
    worker.wait_for("store.reloaded")
    deployment.config.write_text(good.replace(deployment.signer.thumbprint, new.thumbprint.lower()))
    worker.wait_for("config.reloaded")
    await client.publish("Orders", b"after", message_id="after")
    (after,) = await client.drain(capture.name, 1)
    result = unwrap(
        after.body,
        tmp_path / "after",
        ca_pem=deployment.pki.ca_pem,
        recip_cert=deployment.partner_cert,
        recip_key=deployment.partner_key,
    )
    assert result.signer_thumbprint == new.thumbprint and result.payload == b"after"
    assert worker.proc is not None and worker.proc.poll() is None


async def test_health_follows_the_consumer_and_stats_are_logged(
    vhost: str, deployment: Deployment, workers: Any, client: Client, tmp_path: Path
) -> None:
    health = tmp_path / "health"
    env = deployment.env(
        vhost,
        "svc-a",
        SENDPIPE_HEALTH_FILE=str(health),
        SENDPIPE_HEALTH_MAX_AGE_S="1.5",
        SENDPIPE_STATS_INTERVAL_S="0.5",
    )
    assert sendpipe(env, "health").returncode == 1  # nothing running yet
    worker = workers(env)
    worker.wait_for("consumer.started")
    await client.capture()
    await client.publish("Orders", b"x", message_id="h1")
    worker.wait_for("message.delivered")
    deadline = time.monotonic() + 10
    while sendpipe(env, "health").returncode != 0:
        assert time.monotonic() < deadline, "heartbeat never became fresh"
        time.sleep(0.2)
    stats = worker.wait_for("stats")[-1]
    for key in ("delivered", "suspended", "retried", "in_flight", "rate_per_s", "mean_ms", "p99_ms"):
        assert key in stats
    # The broker stops the consumer's connection for good (vhost permissions gone): health goes stale
    # although the process lives on, reconnecting.
    name = vhost.rsplit("/", 1)[1]
    broker = broker_of(vhost)
    broker.ctl("clear_permissions", "-p", name, "guest", timeout_s=60)
    broker.ctl("close_all_connections", "-p", name, "test", timeout_s=60)
    time.sleep(2.5)
    unhealthy = sendpipe(env, "health")
    assert unhealthy.returncode == 1 and "unhealthy" in unhealthy.stdout
    assert worker.proc is not None and worker.proc.poll() is None
    assert worker.events("stats")[-1]["delivered"] >= 1
    broker.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*", timeout_s=60)
