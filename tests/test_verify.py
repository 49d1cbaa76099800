"""`sendpipe verify` (SPEC): the partner's check of what we send, and its exit codes.

0 good (payload byte for byte, signer subject and thumbprint printed); 2 signature/integrity failure;
3 untrusted or invalid signer; 4 not encrypted for the given certificate; 1 other errors.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
import test_interop as ti
from pki import Issued, TestPKI, build_store

from worker.cli.main import main
from worker.identity.keys import SigningIdentity
from worker.smime import identifiers as ids
from worker.smime import signed
from worker.smime.body import Body

CRLF = b"\r\n"


@dataclasses.dataclass(frozen=True)
class VerifyEnv:
    env: ti.Env
    files: Path


@pytest.fixture(scope="module")
def venv(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPKI, signer_rsa2048: Issued, signer_ec: Issued, partner: Issued
) -> VerifyEnv:
    root = tmp_path_factory.mktemp("verify")
    stranger_ca = pki.second_ca()
    stranger = pki.issue("signer of another CA", issuer=stranger_ca, key_slot="stranger")
    partner_b = pki.issue("Northwind partner", usage="encrypt", key_slot="partner-b")
    signers = {"rsa2048": signer_rsa2048, "ec": signer_ec, "stranger": stranger}
    store = build_store(root / "stores", "svc", personal=list(signers.values()), other_people=[partner, partner_b])
    files = root / "files"
    env = ti.Env(
        store=store,
        ca_pem=pki.ca_pem,
        signers=signers,
        signer_pems={name: s.write_cert_pem(files / f"signer-{name}.pem") for name, s in signers.items()},
        partner=partner,
        partner_pem=partner.write_cert_pem(files / "partner.pem"),
        partner_key=partner.write_key_pem(files / "partner.key"),
        partner_b=partner_b,
        partner_b_pem=partner_b.write_cert_pem(files / "partner-b.pem"),
        partner_b_key=partner_b.write_key_pem(files / "partner-b.key"),
        partner_ec=partner,
    )
    return VerifyEnv(env, files)


def _run(
    v: VerifyEnv, tmp_path: Path, entity: bytes, *, cert: Path | None = None, key: Path | None = None
) -> tuple[int, bytes, str, str]:
    src, out = tmp_path / "in.eml", tmp_path / "payload.out"
    src.write_bytes(entity)
    out.unlink(missing_ok=True)
    argv = ["verify", "--ca", str(v.env.ca_pem), "-o", str(out), str(src)]
    if cert is not None and key is not None:
        argv[3:3] = ["--cert", str(cert), "--key", str(key)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return code, out.read_bytes() if out.exists() else b"", stdout.getvalue(), stderr.getvalue()


def _layers(**props: Any) -> str:
    return "-".join(f"{v}" for v in props.values())


CASES: list[dict[str, Any]] = [
    {"signature_type": "BlobSign"},
    {"signature_type": "ClearSign"},
    {"signature_type": "BlobSign", "enable_encryption": True},
    {"signature_type": "ClearSign", "enable_encryption": True, "content_transfer_encoding": "binary"},
    {
        "signature_type": "ClearSign",
        "enable_encryption": True,
        "encryption_algorithm": "AES192",
        "key_encryption_algorithm": "RSA-OAEP",
        "rsa_signature_scheme": "PSS",
        "legacy_media_types": True,
        "micalg_format": "legacy",
    },
    {"signature_type": "BlobSign", "enable_encryption": True, "encryption_algorithm": "AES256-GCM"},
    {"signature_type": "ClearSign", "enable_encryption": True, "compression": "before_signing"},
    {"signature_type": "ClearSign", "enable_encryption": True, "compression": "after_signing"},
    {"signature_type": "BlobSign", "compression": "before_signing"},
    {
        "signature_type": "BlobSign",
        "enable_encryption": True,
        "encryption_algorithm": "AES256-GCM",
        "compression": "after_signing",
    },
    {
        "signature_type": "ClearSign",
        "enable_encryption": True,
        "encryption_algorithm": "AES128-GCM",
        "key_encryption_algorithm": "RSA-OAEP",
        "content_transfer_encoding": "binary",
    },
]


@pytest.mark.parametrize("payload_name", ["text", "binary"])
@pytest.mark.parametrize("signer", ["rsa2048", "ec"])
@pytest.mark.parametrize("props", CASES, ids=[_layers(**c) for c in CASES])
def test_good_entities_verify_and_give_the_payload(
    venv: VerifyEnv, tmp_path: Path, props: dict[str, Any], signer: str, payload_name: str
) -> None:
    payload, content_type = ti.PAYLOADS[payload_name]
    out = ti.encode(venv.env, payload, signer=signer, content_type=content_type, **props)
    code, recovered, stdout, stderr = _run(
        venv, tmp_path, out.body, cert=venv.env.partner_pem, key=venv.env.partner_key
    )
    assert code == 0, stderr
    assert recovered == payload
    assert f"thumbprint: {venv.env.signers[signer].thumbprint}" in stdout
    assert f"signer: {venv.env.signers[signer].cert.subject.rfc4514_string()}" in stdout


def test_a_changed_signed_byte_is_exit_2(venv: VerifyEnv, tmp_path: Path) -> None:
    out = ti.encode(venv.env, ti.TEXT, signature_type="ClearSign")
    # Change the payload inside the signed part (one base64 character for another): still well-formed.
    head, sep, body = out.body.partition(b"Content-Transfer-Encoding: base64\r\n\r\n")
    tampered = head + sep + (b"B" if body[:1] != b"B" else b"C") + body[1:]
    code, recovered, _, stderr = _run(venv, tmp_path, tampered)
    assert code == 2, stderr
    assert "[signature-invalid]" in stderr and "does not verify" in stderr
    assert recovered == b""


def test_a_changed_encapsulated_byte_is_exit_2(venv: VerifyEnv, tmp_path: Path) -> None:
    out = ti.encode(venv.env, ti.BINARY, signature_type="BlobSign")
    head, _, body = out.body.partition(CRLF + CRLF)
    der = bytearray(base64.b64decode(b"".join(body.split(CRLF))))
    at = der.find(b"Content-Type: application/octet-stream") + 20
    der[at] ^= 0x01
    tampered = head + CRLF + CRLF + base64.encodebytes(bytes(der)).replace(b"\n", CRLF)
    code, _, _, stderr = _run(venv, tmp_path, tampered)
    assert code == 2, stderr


def test_an_unsigned_entity_is_exit_2(venv: VerifyEnv, tmp_path: Path) -> None:
    out = ti.encode(venv.env, ti.TEXT, enable_encryption=True)
    code, _, _, stderr = _run(venv, tmp_path, out.body, cert=venv.env.partner_pem, key=venv.env.partner_key)
    assert code == 2
    assert "no signature" in stderr


@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_a_signer_of_another_ca_is_exit_3(venv: VerifyEnv, tmp_path: Path, signature_type: str) -> None:
    out = ti.encode(venv.env, ti.TEXT, signer="stranger", signature_type=signature_type)
    code, recovered, _, stderr = _run(venv, tmp_path, out.body)
    assert code == 3, stderr
    assert "[signer-untrusted]" in stderr
    assert recovered == b""


def test_encrypted_for_someone_else_is_exit_4(venv: VerifyEnv, tmp_path: Path) -> None:
    out = ti.encode(venv.env, ti.TEXT, signature_type="BlobSign", enable_encryption=True)
    code, _, _, stderr = _run(venv, tmp_path, out.body, cert=venv.env.partner_b_pem, key=venv.env.partner_b_key)
    assert code == 4, stderr
    assert "[not-a-recipient]" in stderr
    # The right recipient reads it (the same entity).
    assert _run(venv, tmp_path, out.body, cert=venv.env.partner_pem, key=venv.env.partner_key)[0] == 0


def test_encrypted_without_a_key_is_exit_1(venv: VerifyEnv, tmp_path: Path) -> None:
    out = ti.encode(venv.env, ti.TEXT, signature_type="BlobSign", enable_encryption=True)
    code, _, _, stderr = _run(venv, tmp_path, out.body)
    assert code == 1
    assert "[usage]" in stderr and "--cert" in stderr


def test_payload_to_stdout_and_report_to_stderr(
    venv: VerifyEnv, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    out = ti.encode(venv.env, ti.BINARY, signature_type="BlobSign")
    (tmp_path / "in.eml").write_bytes(out.body)
    assert main(["verify", "--ca", str(venv.env.ca_pem), str(tmp_path / "in.eml")]) == 0
    captured = capfdbinary.readouterr()
    assert captured.out == ti.BINARY
    assert f"thumbprint: {venv.env.signers['rsa2048'].thumbprint}".encode() in captured.err


def test_a_missing_file_is_exit_1(venv: VerifyEnv, tmp_path: Path) -> None:
    assert _run(venv, tmp_path, b"x")[0] == 2  # not a MIME entity: integrity
    code = main(["verify", "--ca", str(venv.env.ca_pem), str(tmp_path / "absent.eml")])
    assert code == 1


def test_a_changed_ciphertext_byte_is_exit_2(venv: VerifyEnv, tmp_path: Path) -> None:
    out = ti.encode(venv.env, ti.BINARY, signature_type="BlobSign", enable_encryption=True)
    head, _, body = out.body.partition(CRLF + CRLF)
    der = bytearray(base64.b64decode(b"".join(body.split(CRLF))))
    der[-20] ^= 0x40  # in the last-but-one AES block: the last block's padding or the signature breaks
    tampered = head + CRLF + CRLF + base64.encodebytes(bytes(der)).replace(b"\n", CRLF)
    code, recovered, _, stderr = _run(venv, tmp_path, tampered, cert=venv.env.partner_pem, key=venv.env.partner_key)
    assert code == 2, stderr
    assert recovered == b""


@pytest.mark.parametrize("where", [-1, -100], ids=["tag", "ciphertext"])
def test_gcm_changed_byte_is_exit_2_and_wrong_recipient_exit_4(venv: VerifyEnv, tmp_path: Path, where: int) -> None:
    out = ti.encode(
        venv.env, ti.BINARY, signature_type="BlobSign", enable_encryption=True, encryption_algorithm="AES256-GCM"
    )
    head, _, body = out.body.partition(CRLF + CRLF)
    der = bytearray(base64.b64decode(b"".join(body.split(CRLF))))
    der[where] ^= 0x01
    tampered = head + CRLF + CRLF + base64.encodebytes(bytes(der)).replace(b"\n", CRLF)
    code, recovered, _, stderr = _run(venv, tmp_path, tampered, cert=venv.env.partner_pem, key=venv.env.partner_key)
    assert code == 2, stderr
    assert recovered == b""
    code, _, _, stderr = _run(venv, tmp_path, out.body, cert=venv.env.partner_b_pem, key=venv.env.partner_b_key)
    assert code == 4, stderr
    code, _, stdout, _ = _run(venv, tmp_path, out.body, cert=venv.env.partner_pem, key=venv.env.partner_key)
    assert code == 0 and "layers: authEnveloped-data > signed-data" in stdout


def test_verify_names_the_layers_it_opened(venv: VerifyEnv, tmp_path: Path) -> None:
    out = ti.encode(venv.env, ti.TEXT, signature_type="ClearSign", enable_encryption=True, compression="after_signing")
    code, recovered, stdout, _ = _run(venv, tmp_path, out.body, cert=venv.env.partner_pem, key=venv.env.partner_key)
    assert code == 0 and recovered == ti.TEXT
    assert "layers: enveloped-data > compressed-data > multipart/signed" in stdout


def test_compressed_but_unsigned_is_exit_2(venv: VerifyEnv, tmp_path: Path) -> None:
    out = ti.encode(venv.env, ti.TEXT, compression="after_signing")
    code, _, _, stderr = _run(venv, tmp_path, out.body)
    assert code == 2 and "no signature" in stderr and "compressed-data" in stderr


def _signed_by(issued: Issued) -> bytes:
    """A BlobSign entity signed by a certificate the store would refuse (cms directly, not the encoder)."""
    signer = signed.Signer.of(SigningIdentity(issued.cert, issued.key, issued.thumbprint, Path("in-memory")))
    inner = Body.of(b"Content-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\nhello")
    der = signed.signed_data(signer, ids.DIGESTS["SHA256"], inner, with_cert=True).materialize()
    head = (
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head + base64.encodebytes(der).replace(b"\n", CRLF)


@pytest.mark.parametrize("kind", ["expired", "not-yet-valid", "key-usage", "control"])
def test_an_invalid_signer_certificate_is_exit_3(venv: VerifyEnv, tmp_path: Path, pki: TestPKI, kind: str) -> None:
    now = dt.datetime.now(dt.UTC)
    issued = {
        "expired": lambda: pki.issue("expired signer", key_slot="bad-signer", not_before=now - dt.timedelta(30),
                                     not_after=now - dt.timedelta(1)),
        "not-yet-valid": lambda: pki.issue("future signer", key_slot="bad-signer", not_before=now + dt.timedelta(1)),
        "key-usage": lambda: pki.issue("encryption-only signer", usage="encrypt", key_slot="bad-signer"),
        "control": lambda: pki.issue("good signer", key_slot="bad-signer"),
    }[kind]()  # fmt: skip
    code, recovered, _, stderr = _run(venv, tmp_path, _signed_by(issued))
    if kind == "control":  # the same construction with a valid certificate verifies: the oracle is sound
        assert code == 0, stderr
        assert recovered == b"hello"
    else:
        assert code == 3, stderr
        assert "[signer-untrusted]" in stderr
