"""Certificate schedules (SPEC): the certificate in force is the latest `from` not in the future, switching
with no reload; preflight shows every entry, warns before a scheduled one is due and missing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import structlog
from pki import Issued, StoreFactory, TestPKI

from worker.cli import check
from worker.config.model import Config, in_force
from worker.errors import Code, ConfigError
from worker.message import Message
from worker.pipeline.catalogue import load_config
from worker.pipeline.preflight import log_findings, preflight
from worker.pipeline.runtime import Runtime

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0)  # the test certificates are valid from a day ago


class Clock:
    """An injectable "now": tests move it instead of sleeping until a `from`."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _config(
    tmp_path: Path, old_signer: str, new_signer: str, old_partner: str, new_partner: str, at: dt.datetime
) -> Config:
    path = tmp_path / "sendpipe.toml"
    path.write_text(f"""
[group]
name = "Contoso"
signing_thumbprint = "{old_signer}"
[[group.scheduled_signing]]
thumbprint = "{new_signer}"
from = {_iso(at)}

[pipelines.SignAndEncrypt]
encode = [ {{ component = "mime_smime_encoder", signature_type = "BlobSign", enable_encryption = true }} ]

[send_ports.Orders]
host = "SendHost"
pipeline = "SignAndEncrypt"
encryption_certificates = [ {{ thumbprint = "{old_partner}", from = 2020-01-01T00:00:00Z }},
                            {{ thumbprint = "{new_partner}", from = {_iso(at)} }} ]
delivery_key = "orders"
auto_resume = ["encryption-cert-not-found"]
""")
    return load_config(path)


@pytest.fixture
def partner2(pki: TestPKI) -> Issued:
    return pki.issue("Fabrikam partner 2027", usage="encrypt", key_slot="partner2")


def _message() -> Message:
    return Message(body=b"payload", message_id="m-1", send_port="Orders")


def test_schedule_entries_parse_and_the_latest_started_is_in_force(tmp_path: Path) -> None:
    a, b, c, d = ("A" * 40, "B" * 40, "C" * 40, "D" * 40)
    switch = T0 + dt.timedelta(hours=1)
    config = _config(tmp_path, a, b, c, d, switch)
    assert config.group.signing_at(T0) == a
    assert config.group.signing_at(switch) == b  # at its `from` exactly
    port = config.send_ports["Orders"]
    assert port.encryption_at(T0) == c and port.encryption_at(switch) == d
    assert port.encryption_at(dt.datetime(2019, 1, 1, tzinfo=dt.UTC)) is None  # the schedule has not started
    assert port.auto_resume == (Code.ENCRYPTION_CERT_NOT_FOUND,)
    assert in_force((), T0) is None


def _refused(tmp_path: Path, port_extra: str, group_extra: str = "") -> str:
    path = tmp_path / "bad.toml"
    path.write_text(f"""
[group]
name = "Contoso"
signing_thumbprint = "{"A" * 40}"
{group_extra}
[pipelines.E]
encode = [ {{ component = "mime_smime_encoder", enable_encryption = true }} ]
[send_ports.P]
host = "H"
pipeline = "E"
delivery_key = "p"
{port_extra}
""")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.message


def test_schedule_config_errors(tmp_path: Path) -> None:
    both = _refused(
        tmp_path,
        f'encryption_thumbprint = "{"C" * 40}"\n'
        f'encryption_certificates = [ {{ thumbprint = "{"D" * 40}", from = 2027-01-01T00:00:00Z }} ]',
    )
    assert "alternatives" in both
    assert "required (or encryption_certificates)" in _refused(tmp_path, "")
    local = _refused(
        tmp_path, f'encryption_certificates = [ {{ thumbprint = "{"D" * 40}", from = 2027-01-01T00:00:00 }} ]'
    )
    assert "time zone" in local
    same = _refused(
        tmp_path,
        f'encryption_certificates = [ {{ thumbprint = "{"D" * 40}", from = 2027-01-01T00:00:00Z }},'
        f' {{ thumbprint = "{"E" * 40}", from = 2027-01-01T00:00:00Z }} ]',
    )
    assert "same `from`" in same
    bad_tp = _refused(tmp_path, 'encryption_certificates = [ { thumbprint = "xyz", from = 2027-01-01T00:00:00Z } ]')
    assert "40 hexadecimal digits" in bad_tp
    assert "not a code a suspended message can carry" in _refused(
        tmp_path, f'encryption_thumbprint = "{"C" * 40}"\nauto_resume = ["usage"]'
    )
    assert "scheduled_signing" in _refused(
        tmp_path,
        f'encryption_thumbprint = "{"C" * 40}"',
        '[[group.scheduled_signing]]\nthumbprint = "BB"\nfrom = 2027-01-01T00:00:00Z',
    )


def test_runtime_switches_signer_and_partner_at_from_without_reload(
    tmp_path: Path,
    make_store: StoreFactory,
    signer_rsa2048: Issued,
    signer_ec: Issued,
    partner: Issued,
    partner2: Issued,
) -> None:
    switch = T0 + dt.timedelta(seconds=30)
    config = _config(
        tmp_path, signer_rsa2048.thumbprint, signer_ec.thumbprint, partner.thumbprint, partner2.thumbprint, switch
    )
    store = make_store("svc-a", personal=[signer_rsa2048, signer_ec], other_people=[partner, partner2])
    clock = Clock(T0)
    runtime = Runtime.build(config, store, "SendHost", clock=clock)
    before = runtime.pipelines["Orders"].run(_message())
    assert (before.signer_thumbprint, before.recipient_thumbprint) == (signer_rsa2048.thumbprint, partner.thumbprint)
    assert runtime.pipelines is runtime.pipelines  # no rebuild while no switch passed
    clock.now = switch - dt.timedelta(microseconds=1)
    assert runtime.pipelines["Orders"].run(_message()).signer_thumbprint == signer_rsa2048.thumbprint
    clock.now = switch
    after = runtime.pipelines["Orders"].run(_message())
    assert (after.signer_thumbprint, after.recipient_thumbprint) == (signer_ec.thumbprint, partner2.thumbprint)


def test_preflight_shows_every_scheduled_certificate_and_when_it_takes_over(
    tmp_path: Path,
    make_store: StoreFactory,
    signer_rsa2048: Issued,
    signer_ec: Issued,
    partner: Issued,
    partner2: Issued,
) -> None:
    switch = T0 + dt.timedelta(days=10)
    config = _config(
        tmp_path, signer_rsa2048.thumbprint, signer_ec.thumbprint, partner.thumbprint, partner2.thumbprint, switch
    )
    # The new signer and the new partner certificate are not in the store yet.
    store = make_store("svc-a", personal=[signer_rsa2048], other_people=[partner])
    near = preflight(config, store, "SendHost", warn_days=30, now=T0)
    rows = {(f.role, f.thumbprint): f for f in near}
    new_signer = rows[("signing", signer_ec.thumbprint)]
    assert new_signer.level == "warning" and new_signer.code == Code.SCHEDULED_CERT_NOT_READY
    assert new_signer.status.startswith(f"missing, takes over {_iso(switch)} (in 10 days)")
    assert new_signer.where.endswith("personal") and new_signer.takes_over == _iso(switch)
    new_partner = rows[("encryption", partner2.thumbprint)]
    assert new_partner.level == "warning" and new_partner.where.endswith("other-people")
    assert rows[("signing", signer_rsa2048.thumbprint)].level == "ok"
    assert rows[("encryption", partner.thumbprint)].level == "ok"
    # Further out than SENDPIPE_EXPIRY_WARNING_DAYS: shown, not a warning.
    far = {(f.role, f.thumbprint): f for f in preflight(config, store, "SendHost", warn_days=5, now=T0)}
    assert far[("signing", signer_ec.thumbprint)].level == "info"
    # At its `from` the missing one is in force: an error (the instance would refuse to start).
    due = {(f.role, f.thumbprint): f for f in preflight(config, store, "SendHost", warn_days=30, now=switch)}
    assert due[("signing", signer_ec.thumbprint)].level == "error"
    assert due[("signing", signer_ec.thumbprint)].code == Code.SIGNING_CERT_NOT_FOUND
    assert due[("signing", signer_rsa2048.thumbprint)].status == "superseded"
    assert due[("encryption", partner2.thumbprint)].level == "error"
    assert due[("encryption", partner.thumbprint)].status == "superseded"
    # Once in the store, the scheduled ones are found and say when they take over.
    full = make_store("svc-b", personal=[signer_rsa2048, signer_ec], other_people=[partner, partner2])
    ready = {(f.role, f.thumbprint): f for f in preflight(config, full, "SendHost", warn_days=30, now=T0)}
    assert ready[("signing", signer_ec.thumbprint)].level == "ok"
    assert ready[("signing", signer_ec.thumbprint)].status == f"found, takes over {_iso(switch)} (in 10 days)"


def test_preflight_a_scheduled_certificate_not_valid_at_its_from_is_flagged(
    tmp_path: Path, pki: TestPKI, make_store: StoreFactory, signer_rsa2048: Issued, partner: Issued
) -> None:
    switch = T0 + dt.timedelta(days=3)
    short = pki.issue("expires before its from", usage="sign", key_slot="signer", not_after=T0 + dt.timedelta(days=1))
    config = _config(
        tmp_path,
        signer_rsa2048.thumbprint,
        short.thumbprint,
        partner.thumbprint,
        partner.thumbprint.replace(partner.thumbprint[0], "0", 1),
        switch,
    )
    store = make_store("svc-a", personal=[signer_rsa2048, short], other_people=[partner])
    rows = {(f.role, f.thumbprint): f for f in preflight(config, store, "SendHost", warn_days=30, now=T0)}
    flagged = rows[("signing", short.thumbprint)]
    assert flagged.level == "warning" and flagged.status.startswith(Code.SIGNING_CERT_EXPIRED)


def test_a_scheduled_certificate_due_and_missing_is_logged_at_start_and_daily(
    tmp_path: Path, make_store: StoreFactory, signer_rsa2048: Issued, signer_ec: Issued, partner: Issued
) -> None:
    switch = T0 + dt.timedelta(days=2)
    config = _config(
        tmp_path, signer_rsa2048.thumbprint, signer_ec.thumbprint, partner.thumbprint, partner.thumbprint, switch
    )
    store = make_store("svc-a", personal=[signer_rsa2048], other_people=[partner])
    with structlog.testing.capture_logs() as logs:
        log_findings(structlog.get_logger("t"), preflight(config, store, "SendHost", warn_days=30, now=T0))
    (line,) = [e for e in logs if e["event"] == "cert.scheduled_not_ready"]
    assert line["thumbprint"] == signer_ec.thumbprint and line["takes_over"] == _iso(switch)
    assert line["error_code"] == "scheduled-cert-not-ready" and line["store"].endswith("personal")
    assert not [e for e in logs if e["event"] in {"cert.problem", "cert.expiring"}]


def test_check_prints_when_each_scheduled_certificate_takes_over(
    tmp_path: Path,
    make_store: StoreFactory,
    signer_rsa2048: Issued,
    signer_ec: Issued,
    partner: Issued,
    partner2: Issued,
) -> None:
    switch = T0 + dt.timedelta(days=3)
    config = _config(
        tmp_path, signer_rsa2048.thumbprint, signer_ec.thumbprint, partner.thumbprint, partner2.thumbprint, switch
    )
    store = make_store("svc-a", personal=[signer_rsa2048, signer_ec], other_people=[partner, partner2])
    shown = {
        (f.role, f.thumbprint): check._status(f) for f in preflight(config, store, "SendHost", warn_days=1, now=T0)
    }
    assert shown[("signing", signer_ec.thumbprint)] == f"found, takes over {_iso(switch)} (in 3 days)"
    assert shown[("encryption", partner.thumbprint)].endswith("(in force since 2020-01-01T00:00:00Z)")
    after = {
        (f.role, f.thumbprint): check._status(f) for f in preflight(config, store, "SendHost", warn_days=1, now=switch)
    }
    assert after[("encryption", partner.thumbprint)] == "superseded (was from 2020-01-01T00:00:00Z)"
    assert after[("signing", signer_rsa2048.thumbprint)] == "superseded"
