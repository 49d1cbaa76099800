"""Several recipients (SPEC ``additional_recipient_thumbprints``): every recipient opens the message.

Checked with the ``openssl`` CLI for each recipient's own key (RSA key transport, PKCS #1 v1.5 or OAEP,
and EC P-256/P-384 key agreement, mixed), in EnvelopedData and AuthEnvelopedData; the partner's
RecipientInfo is the first (pyas2lib decrypts only the first), the others follow in the config's order.
Bouncy Castle checks the same in tests/test_interop_bc.py; ``sendpipe verify`` with several keys is here.
"""

from __future__ import annotations

import base64
import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
import test_interop as ti
from interop.receivers_env import ReceiversEnv, build
from pki import Issued, TestPKI

from worker.cli.main import main
from worker.config.model import Config
from worker.errors import CertificateError
from worker.message import Message
from worker.pipeline.catalogue import build_pipeline, load_config
from worker.pipeline.preflight import preflight

# Recipient sets, the partner first. OAEP is an RSA key transport: with it every recipient is RSA.
SETS = {
    "rsa+rsa-b": ("rsa", "rsa-b"),
    "rsa+p256+p384": ("rsa", "p256", "p384"),
    "p384+rsa-b+p256": ("p384", "rsa-b", "p256"),
}


@pytest.fixture(scope="module")
def renv(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPKI, signer_rsa2048: Issued, signer_ec: Issued, partner: Issued
) -> ReceiversEnv:
    return build(tmp_path_factory.mktemp("recipients"), pki, signer_rsa2048, signer_ec, partner)


def encode_for(renv: ReceiversEnv, names: tuple[str, ...], payload: bytes, **props: Any) -> bytes:
    first, *others = (renv.recipients[n].thumbprint for n in names)
    out = ti.encode(
        renv.base,
        payload,
        encryption_thumbprint=first,
        additional=tuple(others),
        enable_encryption=True,
        **props,
    )
    assert out.recipient_thumbprint == first  # the log line and header name the partner
    return out.body


def recipient_serials(tmp_path: Path, entity: bytes) -> list[int]:
    """The serial numbers of the RecipientInfos' certificates, in the order of the SET (openssl reads it)."""
    src = tmp_path / "order.eml"
    src.write_bytes(entity)
    printed = ti.openssl("cms", "-cmsout", "-print", "-in", src).stdout.decode()
    head = printed.split("encryptedContentInfo:")[0].split("authEncryptedContentInfo:")[0]
    return [int(s, 16) for s in re.findall(r"serialNumber: (?:0x)?([0-9A-Fa-f]+)", head)]


@pytest.mark.parametrize("cipher", ["AES128", "AES192", "AES256", "AES128-GCM", "AES256-GCM"])
@pytest.mark.parametrize("recipients", list(SETS))
def test_every_recipient_decrypts_with_openssl(
    renv: ReceiversEnv, tmp_path: Path, recipients: str, cipher: str
) -> None:
    names = SETS[recipients]
    entity = encode_for(renv, names, ti.BINARY, signature_type="ClearSign", encryption_algorithm=cipher)
    assert recipient_serials(tmp_path, entity) == [renv.recipients[n].issued.serial for n in names]
    for name in names:
        party = renv.recipients[name]
        inner = ti.decrypt(renv.base, tmp_path, entity, key=party.key, cert=party.pem)
        content, signer, _ = ti.verify(renv.base, tmp_path, "ClearSign", inner)
        assert signer == renv.signers["rsa2048"].thumbprint
        assert ti.payload_of(content, content_type="application/octet-stream", cte="base64")[0] == ti.BINARY


@pytest.mark.parametrize("cipher", ["AES256", "AES256-GCM"])
def test_rsa_oaep_for_every_rsa_recipient(renv: ReceiversEnv, tmp_path: Path, cipher: str) -> None:
    names = SETS["rsa+rsa-b"]
    entity = encode_for(
        renv, names, ti.MIB, signature_type="BlobSign", encryption_algorithm=cipher, key_encryption_algorithm="RSA-OAEP"
    )
    der = tmp_path / "env.der"
    der.write_bytes(_der(entity))
    parsed = ti.openssl("asn1parse", "-inform", "DER", "-in", der).stdout.decode()
    assert parsed.count(":rsaesOaep") == 2
    for name in names:
        party = renv.recipients[name]
        inner = ti.decrypt(renv.base, tmp_path, entity, key=party.key, cert=party.pem)
        content, _, _ = ti.verify(renv.base, tmp_path, "BlobSign", inner)
        assert ti.payload_of(content, content_type="application/octet-stream", cte="base64")[0] == ti.MIB


def _der(entity: bytes) -> bytes:
    _, body = ti.parse_entity(entity)
    return base64.b64decode(b"".join(body.split(b"\r\n")), validate=True)


def test_a_stranger_cannot_decrypt(renv: ReceiversEnv, tmp_path: Path) -> None:
    entity = encode_for(renv, ("rsa", "p256"), ti.TEXT)
    (tmp_path / "e.eml").write_bytes(entity)
    p384 = renv.recipients["p384"]
    refused = ti.openssl(
        "cms", "-decrypt", "-binary", "-in", tmp_path / "e.eml", "-inkey", p384.key, "-recip", p384.pem,
        "-out", tmp_path / "nope", ok=False,
    )  # fmt: skip
    assert refused.returncode != 0


def test_the_override_header_is_the_first_recipient_and_not_repeated(renv: ReceiversEnv, tmp_path: Path) -> None:
    rsa, rsa_b, p256 = (renv.recipients[n] for n in ("rsa", "rsa-b", "p256"))
    out = ti.encode(
        renv.base,
        ti.TEXT,
        encryption_thumbprint=rsa.thumbprint,
        additional=(rsa_b.thumbprint, p256.thumbprint),
        enable_encryption=True,
        headers={"sendpipe-encryption-thumbprint": p256.thumbprint},
    )
    assert out.recipient_thumbprint == p256.thumbprint
    # BizTalk's BTS.EncryptionCert replaces the partner; the extra recipients stay, each once.
    assert recipient_serials(tmp_path, out.body) == [p256.issued.serial, rsa_b.issued.serial]


def test_a_missing_extra_recipient_fails_the_message(renv: ReceiversEnv) -> None:
    # Never sent without the copy the port promises (e.g. the archive): the message is suspended.
    with pytest.raises(CertificateError) as exc:
        ti.encode(renv.base, ti.TEXT, additional=("AB" * 20,), enable_encryption=True)
    assert exc.value.code == "encryption-cert-not-found"
    assert "AB" * 20 in exc.value.message


def test_one_recipient_is_todays_envelope(renv: ReceiversEnv, tmp_path: Path) -> None:
    entity = encode_for(renv, ("rsa",), ti.TEXT)
    assert recipient_serials(tmp_path, entity) == [renv.recipients["rsa"].issued.serial]


# -- sendpipe verify with several keys -----------------------------------------------------------


def _verify(renv: ReceiversEnv, tmp_path: Path, entity: bytes, names: tuple[str, ...]) -> tuple[int, bytes, str]:
    src, out = tmp_path / "in.eml", tmp_path / "out.bin"
    src.write_bytes(entity)
    out.unlink(missing_ok=True)
    argv = ["verify", "--ca", str(renv.base.ca_pem), "-o", str(out)]
    for name in names:
        argv += ["--cert", str(renv.recipients[name].pem), "--key", str(renv.recipients[name].key)]
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        code = main([*argv, str(src)])
    return code, out.read_bytes() if out.exists() else b"", stderr.getvalue()


@pytest.mark.parametrize("cipher", ["AES256", "AES256-GCM"])
def test_verify_decrypts_with_whichever_key_matches(renv: ReceiversEnv, tmp_path: Path, cipher: str) -> None:
    entity = encode_for(renv, ("rsa", "p256"), ti.BINARY, signature_type="BlobSign", encryption_algorithm=cipher)
    for keys in (("p384", "p256"), ("rsa-b", "rsa"), ("p256",)):
        code, payload, _ = _verify(renv, tmp_path, entity, keys)
        assert (code, payload) == (0, ti.BINARY), keys
    code, payload, err = _verify(renv, tmp_path, entity, ("p384", "rsa-b"))
    assert (code, payload) == (4, b"")
    assert "not encrypted for any of the 2 given certificates" in err


# -- from the config: preflight and the built pipeline -------------------------------------------


def _config(renv: ReceiversEnv, tmp_path: Path, extras: list[str], *, scheduled: bool = False) -> Config:
    text = f"""
[group]
name = "Contoso"
signing_thumbprint = "{renv.signers["rsa2048"].thumbprint}"

[pipelines.AS2]
encode = [ {{ component = "mime_smime_encoder", signature_type = "ClearSign", enable_encryption = true }} ]

[send_ports.Port]
host = "SendHost"
pipeline = "AS2"
encryption_thumbprint = "{renv.recipients["rsa"].thumbprint}"
additional_recipient_thumbprints = {extras!r}
delivery_key = "port"
""".replace("'", '"')
    if scheduled:  # the partner's certificate as a schedule (SPEC "Certificate schedules")
        partner = renv.recipients["rsa"].thumbprint
        text = text.replace(
            f'encryption_thumbprint = "{partner}"',
            f'encryption_certificates = [{{ thumbprint = "{partner}", from = 2026-01-01T00:00:00Z }}]',
        )
    path = tmp_path / "sendpipe.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


@pytest.mark.parametrize("scheduled", [False, True], ids=["thumbprint", "schedule"])
def test_preflight_checks_every_additional_recipient(renv: ReceiversEnv, tmp_path: Path, scheduled: bool) -> None:
    missing = "AB" * 20
    config = _config(renv, tmp_path, [renv.recipients["p256"].thumbprint, missing], scheduled=scheduled)
    rows = {
        f.thumbprint: f for f in preflight(config, renv.base.store, "SendHost", warn_days=30) if f.role == "encryption"
    }
    assert list(rows) == [renv.recipients["rsa"].thumbprint, renv.recipients["p256"].thumbprint, missing]
    assert rows[renv.recipients["p256"].thumbprint].level == "ok"
    assert (rows[missing].level, rows[missing].status, rows[missing].code) == (
        "error", "missing", "encryption-cert-not-found",
    )  # fmt: skip
    assert all(f.subject == "Port" for f in rows.values())


def test_the_built_pipeline_encrypts_for_the_configured_recipients(renv: ReceiversEnv, tmp_path: Path) -> None:
    names = ("rsa", "p384", "rsa-b")
    config = _config(renv, tmp_path, [renv.recipients[n].thumbprint for n in names[1:]])
    pipeline = build_pipeline(config, "Port", renv.base.store)
    message = Message(body=ti.TEXT, message_id="m", send_port="Port", content_type="text/plain")
    entity = pipeline.run(message).body
    assert recipient_serials(tmp_path, entity) == [renv.recipients[n].issued.serial for n in names]
    party = renv.recipients["rsa-b"]
    inner = ti.decrypt(renv.base, tmp_path, entity, key=party.key, cert=party.pem)
    content, _, _ = ti.verify(renv.base, tmp_path, "ClearSign", inner)
    assert ti.payload_of(content, content_type="text/plain", cte="base64")[0] == ti.TEXT


def test_an_ec_extra_recipient_with_rsa_oaep_fails_the_message(renv: ReceiversEnv) -> None:
    # OAEP is an RSA key transport; an EC recipient is always written to with ECDH, so the combination is
    # refused for the extra recipients exactly as for the partner (suspended, never sent without them).
    with pytest.raises(CertificateError) as exc:
        encode_for(renv, ("rsa", "p256"), ti.TEXT, key_encryption_algorithm="RSA-OAEP")
    assert exc.value.code == "algorithm-not-supported"
    assert renv.recipients["p256"].thumbprint in exc.value.message
