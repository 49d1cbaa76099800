"""Certificate lifecycle against the real broker and real instances (issue 12): a schedule switching mid-run
(signer and partner, verified with openssl cms), a fix followed at once by a resume, auto_resume with no
operator, a truncated PKCS#12 dropped in while messages flow."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from brokerkit import SENDPIPE, STORE_PASSWORD, Client, Deployment
from pki import write_other_people, write_personal_pfx
from smime_check import unwrap


def sendpipe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SENDPIPE, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def _opt_in(deployment: Deployment, codes: str) -> None:
    text = deployment.config.read_text()
    deployment.config.write_text(
        text.replace('delivery_key = "fabrikam.orders"', f'delivery_key = "fabrikam.orders"\nauto_resume = [{codes}]')
    )


async def test_a_resume_right_after_the_fix_is_delivered(
    vhost: str, deployment: Deployment, workers: Any, client: Client, tmp_path: Path
) -> None:
    """The timer would reload in 10 minutes: the failing message itself makes the instance look again."""
    env = deployment.env(vhost, "svc-b", SENDPIPE_RELOAD_INTERVAL_S="600")
    partner_file = deployment.store_root / "svc-b" / "other-people" / "fabrikam.cer"
    saved = partner_file.read_bytes()
    partner_file.unlink()
    worker = workers(env)
    worker.wait_for("consumer.started")
    capture = await client.capture()
    await client.publish("Orders", b"order 1", message_id="fix-1")
    worker.wait_for("message.suspended")
    partner_file.write_bytes(saved)  # the fix, then at once:
    resumed = sendpipe(env, "suspended", "resume", "--all")
    assert resumed.returncode == 0 and "resumed fix-1" in resumed.stdout, resumed.stderr
    (got,) = await client.drain(capture.name, 1)
    result = unwrap(got.body, tmp_path / "fix", ca_pem=deployment.pki.ca_pem,
                    recip_cert=deployment.partner_cert, recip_key=deployment.partner_key)  # fmt: skip
    assert result.payload == b"order 1"
    assert len(worker.events("message.suspended")) == 1 and len(worker.events("message.delivered")) == 1
    assert worker.events("store.reloaded")  # reloaded on demand, long before the timer
    assert await client.count("sendpipe.suspended.SendHost") == 0


async def test_auto_resume_with_no_operator(vhost: str, deployment: Deployment, workers: Any, client: Client) -> None:
    _opt_in(deployment, '"encryption-cert-not-found"')
    env = deployment.env(vhost, "svc-b", SENDPIPE_RELOAD_INTERVAL_S="0.3")
    partner_file = deployment.store_root / "svc-b" / "other-people" / "fabrikam.cer"
    saved = partner_file.read_bytes()
    partner_file.unlink()
    worker = workers(env)
    worker.wait_for("consumer.started")
    capture = await client.capture("fabrikam.#")
    for i in range(2):
        await client.publish("Orders", b"order %d" % i, message_id=f"auto-{i}")
    await client.publish("Invoices", b"invoice", message_id="manual")  # same cause, not opted in
    await client.publish("Ghost", b"ghost", message_id="ghost")  # opted out, and not fixed
    worker.wait_for("message.suspended", 4)
    partner_file.write_bytes(saved)
    (line,) = worker.wait_for("suspended.resumed")
    assert line["by"] == "auto-resume" and line["count"] == 2 and sorted(line["ids"]) == ["auto-0", "auto-1"]
    assert line["send_ports"] == ["Orders"] and line["error_codes"] == ["encryption-cert-not-found"]
    got = await client.drain(capture.name, 2)
    assert sorted(str(m.message_id) for m in got) == ["auto-0", "auto-1"]
    await asyncio.sleep(1)
    assert await client.count("sendpipe.suspended.SendHost") == 2  # manual and ghost, moved untouched
    listing = sendpipe(env, "suspended", "list")
    assert sorted(r.split()[0] for r in listing.stdout.splitlines()[2:-1]) == ["ghost", "manual"]
    assert len(worker.events("suspended.resumed")) == 1  # once per cause


async def test_a_schedule_switches_signer_and_partner_mid_run(
    vhost: str, deployment: Deployment, workers: Any, client: Client, tmp_path: Path
) -> None:
    new_signer = deployment.pki.issue("Contoso group signing 2027", usage="sign", key_slot="rotated")
    partner2 = deployment.pki.issue("Fabrikam 2027", usage="encrypt", key_slot="partner2")
    write_personal_pfx(deployment.store_root, "svc-a", "group-signing-2027", new_signer, STORE_PASSWORD.encode())
    write_other_people(deployment.store_root, "svc-a", "fabrikam-2027", partner2)
    good = deployment.config.read_text()

    def scheduled(seconds_ahead: float) -> str:
        at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_ahead)).strftime("%Y-%m-%dT%H:%M:%SZ")
        old_partner = f'encryption_thumbprint = "{deployment.partner.thumbprint}"\ndelivery_key = "fabrikam.orders"'
        assert old_partner in good
        text = good.replace(
            old_partner,
            f'encryption_certificates = [ {{ thumbprint = "{deployment.partner.thumbprint}",'
            " from = 2020-01-01T00:00:00Z },"
            f' {{ thumbprint = "{partner2.thumbprint}", from = {at} }} ]\ndelivery_key = "fabrikam.orders"',
        )
        text = text.replace(
            "\n[pipelines.SignAndEncrypt]",
            f'[[group.scheduled_signing]]\nthumbprint = "{new_signer.thumbprint}"\nfrom = {at}\n'
            "\n[pipelines.SignAndEncrypt]",
        )
        deployment.config.write_text(text)
        return at

    env = deployment.env(vhost, "svc-a", SENDPIPE_RELOAD_INTERVAL_S="0.3")
    later = scheduled(3600)
    check = sendpipe(env, "check", "--json")
    rows = {(f["role"], f["thumbprint"]): f for f in json.loads(check.stdout)["findings"]}
    assert rows[("signing", new_signer.thumbprint)]["status"].startswith(f"found, takes over {later} (in 0 days)")
    assert rows[("encryption", partner2.thumbprint)]["takes_over"] == later
    deployment.config.write_text(good)
    worker = workers(env)
    worker.wait_for("consumer.started")
    capture = await client.capture("fabrikam.orders")
    at = scheduled(4)  # the schedule arrives by a reload; the switch itself then needs none
    worker.wait_for("config.reloaded")
    await client.publish("Orders", b"before", message_id="before")
    (before,) = await client.drain(capture.name, 1)
    assert before.headers["sendpipe-signer-thumbprint"] == deployment.signer.thumbprint
    assert before.headers["sendpipe-recipient-thumbprint"] == deployment.partner.thumbprint
    switch = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
    await asyncio.sleep(max(0.0, (switch - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
    await client.publish("Orders", b"after", message_id="after")
    (after,) = await client.drain(capture.name, 1)
    result = unwrap(after.body, tmp_path / "after", ca_pem=deployment.pki.ca_pem,
                    recip_cert=partner2.write_cert_pem(tmp_path / "p2.pem"),
                    recip_key=partner2.write_key_pem(tmp_path / "p2.key"))  # fmt: skip
    assert result.payload == b"after" and result.signer_thumbprint == new_signer.thumbprint
    (line,) = [e for e in worker.events("message.delivered") if e["message_id"] == "after"]
    assert (line["signer_thumbprint"], line["recipient_thumbprint"]) == (new_signer.thumbprint, partner2.thumbprint)
    assert len(worker.events("config.reloaded")) == 1 and not worker.events("store.reloaded")  # none at the switch


async def test_a_truncated_pkcs12_dropped_in_while_messages_flow(
    vhost: str, deployment: Deployment, workers: Any, client: Client
) -> None:
    env = deployment.env(vhost, "svc-a", SENDPIPE_RELOAD_INTERVAL_S="0.2")
    worker = workers(env)
    worker.wait_for("consumer.started")
    capture = await client.capture("fabrikam.orders")
    pfx = deployment.store_root / "svc-a" / "personal" / "group-signing.pfx"
    whole = pfx.read_bytes()
    sent = 0
    deadline = time.monotonic() + 30
    while not worker.events("store.rejected") and time.monotonic() < deadline:
        if sent == 5:
            pfx.write_bytes(whole[: len(whole) // 3])  # a copy still under way
        await client.publish("Orders", b"order %d" % sent, message_id=f"t{sent}")
        sent += 1
        await asyncio.sleep(0.05)
    (rejected,) = worker.events("store.rejected")[:1]
    assert rejected["error_code"] == "signing-cert-not-found" and rejected["kept"] == "previous"
    for i in range(5):
        await client.publish("Orders", b"late %d" % i, message_id=f"late{i}")
        sent += 1
    pfx.write_bytes(whole)  # the copy completes
    worker.wait_for("store.reloaded")
    await client.drain(capture.name, sent)
    assert not worker.events("message.suspended")
    assert await client.count("sendpipe.suspended.SendHost") == 0


def test_check_reports_symlinked_odd_typed_and_misplaced_keys(vhost: str, deployment: Deployment) -> None:
    """What the store refuses to read is named by `sendpipe check` (and the signing certificate is not taken
    from another account through a link)."""
    personal = deployment.store_root / "svc-c" / "personal"
    personal.mkdir(parents=True)
    (personal / "group-signing.pfx").symlink_to(deployment.store_root / "svc-a" / "personal" / "group-signing.pfx")
    odd = personal / "legacy.pem"
    odd.write_bytes(
        deployment.signer.cert_pem() + b"-----BEGIN DSA PRIVATE KEY-----\nAAAA\n-----END DSA PRIVATE KEY-----\n"
    )
    odd.chmod(0o644)
    misplaced = deployment.store_root / "svc-c" / "other-people" / "partner-with-key.pem"
    misplaced.write_bytes(deployment.partner.cert_pem() + deployment.partner.key_pem())
    out = sendpipe(deployment.env(vhost, "svc-c"), "check", "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    problems = sorted(f["detail"] for f in report["findings"] if f["role"] == "store")
    assert problems == [
        "group-signing.pfx: is a symbolic link; refused (not followed)",
        "legacy.pem: mode 0644 (DSA PRIVATE KEY refused, chmod 600)",
        "partner-with-key.pem: holds a PRIVATE KEY — other-people/ is for partners' public certificates only; "
        "file ignored (move the key out of it)",
    ]
    signing = next(f for f in report["findings"] if f["role"] == "signing")
    assert signing["level"] == "error" and signing["code"] == "key-file-insecure"  # the DSA file's certificate
    text = sendpipe(deployment.env(vhost, "svc-c"), "check").stdout
    assert "WARNING" in text and "file unusable" in text
