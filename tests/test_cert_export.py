"""`sendpipe cert export` (SPEC): the current and scheduled signing certificates, PEM with chain, and a summary.

The PEM is read back by cryptography and by ``openssl verify`` (the partner's trust check: each exported
signing certificate verifies against the exported root with the exported intermediate).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pki import Issued, TestPKI, write_personal_pem, write_personal_pfx

from worker.cli.main import main

_CONFIG = """
[group]
name = "Contoso"
signing_thumbprint = "{current}"
{scheduled}
[pipelines.Sign]
encode = [ {{ component = "mime_smime_encoder", signature_type = "BlobSign" }} ]

[send_ports.Port]
host = "SendHost"
pipeline = "Sign"
delivery_key = "port"
"""
_SCHEDULE = '[[group.scheduled_signing]]\nthumbprint = "{thumbprint}"\nfrom = {at}\n'


def _setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, current: Issued, scheduled: list[tuple[Issued, str]]
) -> None:
    stores = tmp_path / "stores"
    (stores / "svc").mkdir(parents=True)
    config = tmp_path / "sendpipe.toml"
    schedule = "".join(_SCHEDULE.format(thumbprint=i.thumbprint, at=at) for i, at in scheduled)
    config.write_text(_CONFIG.format(current=current.thumbprint, scheduled=schedule))
    for name in [k for k in os.environ if k.startswith("SENDPIPE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SENDPIPE_CONFIG", str(config))
    monkeypatch.setenv("SENDPIPE_STORE_ROOT", str(stores))
    monkeypatch.setenv("SENDPIPE_SERVICE_ACCOUNT", "svc")
    monkeypatch.setenv("SENDPIPE_STORE_PASSWORD", "pw")
    monkeypatch.setenv("SENDPIPE_LOG_FORMAT", "console")


def _der(c: x509.Certificate | Issued) -> bytes:
    cert = c.cert if isinstance(c, Issued) else c
    return cert.public_bytes(serialization.Encoding.DER)


def test_current_and_scheduled_with_their_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pki: TestPKI
) -> None:
    intermediate = pki.intermediate()
    current = pki.issue("Contoso signing 2026", key_slot="export-current")
    upcoming = pki.issue("Contoso signing 2027", issuer=intermediate, key_slot="export-next")
    superseded = pki.issue("Contoso signing 2025", key_slot="export-old")
    _setup(tmp_path, monkeypatch, superseded, [(current, "2020-01-01T00:00:00Z"), (upcoming, "2099-03-01T00:00:00Z")])
    stores = tmp_path / "stores"
    write_personal_pem(stores, "svc", "old", superseded)
    write_personal_pem(stores, "svc", "current", current)
    write_personal_pfx(stores, "svc", "next", upcoming, b"pw", cas=[intermediate])
    (stores / "svc" / "other-people").mkdir()
    (stores / "svc" / "other-people" / "root.cer").write_bytes(pki.ca.cert_der())
    out = tmp_path / "group.pem"

    assert main(["cert", "export", "-o", str(out)]) == 0
    summary = capsys.readouterr().out
    exported = x509.load_pem_x509_certificates(out.read_bytes())
    # current, its root; the scheduled one, its intermediate (the root once); never the superseded one.
    assert [_der(c) for c in exported] == [_der(current), _der(pki.ca), _der(upcoming), _der(intermediate)]
    lines = summary.splitlines()
    assert lines[0].split() == ["role", "thumbprint", "subject", "valid", "from"]
    assert lines[2].startswith(f"current    {current.thumbprint}") and "in force now" in lines[2]
    assert lines[3].startswith(f"scheduled  {upcoming.thumbprint}") and lines[3].endswith("2099-03-01T00:00:00Z")
    assert superseded.thumbprint not in summary
    text = out.read_text()
    assert f"# thumbprint: {upcoming.thumbprint}" in text and "# intermediate CA of the above" in text

    # What the partner does with it: trust the root, verify each signing certificate through the chain.
    (tmp_path / "root.pem").write_bytes(exported[1].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "untrusted.pem").write_bytes(exported[3].public_bytes(serialization.Encoding.PEM))
    for index in (0, 2):
        (tmp_path / "leaf.pem").write_bytes(exported[index].public_bytes(serialization.Encoding.PEM))
        done = subprocess.run(
            ["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "untrusted.pem"),
             "-purpose", "smimesign", str(tmp_path / "leaf.pem")],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()


def test_pem_to_stdout_summary_to_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfdbinary: pytest.CaptureFixture[bytes], pki: TestPKI
) -> None:
    current = pki.issue("Contoso signing", key_slot="export-current")
    _setup(tmp_path, monkeypatch, current, [])
    write_personal_pem(tmp_path / "stores", "svc", "current", current)
    assert main(["cert", "export"]) == 0
    captured = capfdbinary.readouterr()
    assert [_der(c) for c in x509.load_pem_x509_certificates(captured.out)] == [_der(current)]
    assert current.thumbprint.encode() in captured.err


def test_a_scheduled_certificate_missing_from_the_store_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pki: TestPKI
) -> None:
    current = pki.issue("Contoso signing", key_slot="export-current")
    absent = pki.issue("never installed", key_slot="export-next")
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _setup(tmp_path, monkeypatch, current, [(absent, at)])
    write_personal_pem(tmp_path / "stores", "svc", "current", current)
    assert main(["cert", "export", "-o", str(tmp_path / "out.pem")]) == 1
    err = capsys.readouterr().err
    assert "[signing-cert-not-found]" in err and absent.thumbprint in err
    assert not (tmp_path / "out.pem").exists()  # nothing half-written for the partner
