"""Interop: what the MIME/SMIME encoder emits is checked with the ``openssl`` command line, not our code.

Every case encodes a payload, writes the entity exactly as it would go on the wire, decrypts it with
``openssl cms -decrypt``, verifies the signature with ``openssl cms -verify`` against the test CA, and
then compares the recovered payload with the input byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pki import Issued, TestPKI, build_store

from worker.errors import CertificateError, MessageError
from worker.identity.store import CertificateStore
from worker.message import Message
from worker.pipeline.encoder import EncoderProperties, MimeSmimeEncoder
from worker.pipeline.stage import StageContext

CRLF = b"\r\n"

# -- payloads -------------------------------------------------------------------------------------

TEXT = (
    b"Orders for 2024-06-01\n"
    b"line two\twith a tab and trailing spaces   \n"
    b"\n"
    b"From the warehouse (a line mail software likes to mangle)\n"
    b".\n"
    b"--not-a-boundary\n"
    b"caf\xc3\xa9 = 3.50 EUR\n"
    b"last line without a newline"
)
_rng = random.Random(20240601)
BINARY = b"\x00\r\n\r\r\n\n--\x00\r" + _rng.randbytes(4096) + b"\r\n\x00\n\r"
EMPTY = b""
MIB = random.Random(1048576).randbytes(1 << 20)

PAYLOADS: dict[str, tuple[bytes, str]] = {
    "text": (TEXT, "text/plain; charset=utf-8"),
    "binary": (BINARY, "application/octet-stream"),
    "empty": (EMPTY, "application/octet-stream"),
    "1mib": (MIB, "application/x-random"),
}
SIGNERS = ("rsa2048", "rsa3072", "ec")
_CIPHER_NAMES = {"AES128": "aes-128-cbc", "AES192": "aes-192-cbc", "AES256": "aes-256-cbc"}


# -- the environment: a store with all signers and partners, and their files for openssl ----------


@dataclass(frozen=True)
class Env:
    store: CertificateStore
    ca_pem: Path
    signers: dict[str, Issued]
    signer_pems: dict[str, Path]
    partner: Issued
    partner_pem: Path
    partner_key: Path
    partner_b: Issued
    partner_b_pem: Path
    partner_b_key: Path
    partner_ec: Issued


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
    pki: TestPKI,
    signer_rsa2048: Issued,
    signer_rsa3072: Issued,
    signer_ec: Issued,
    partner: Issued,
) -> Env:
    root = tmp_path_factory.mktemp("interop")
    partner_b = pki.issue("Northwind partner", usage="encrypt", key_slot="partner-b")
    partner_ec = pki.issue("EC partner", key_type="ec-p256", usage="encrypt", key_slot="partner")
    signers = {"rsa2048": signer_rsa2048, "rsa3072": signer_rsa3072, "ec": signer_ec}
    store = build_store(
        root / "stores",
        "svc-send",
        personal=list(signers.values()),
        other_people=[partner, partner_b, partner_ec],
    )
    assert store.problems == ()
    files = root / "files"
    return Env(
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
        partner_ec=partner_ec,
    )


def encode(
    env: Env,
    payload: bytes,
    *,
    signer: str = "rsa2048",
    content_type: str = "application/octet-stream",
    headers: Mapping[str, Any] | None = None,
    encryption_thumbprint: str | None = None,
    additional: tuple[str, ...] = (),
    **props: Any,
) -> Message:
    ctx = StageContext(
        env.store,
        env.signers[signer].thumbprint,
        "Port",
        encryption_thumbprint or env.partner.thumbprint,
        additional,
    )
    encoder = MimeSmimeEncoder(EncoderProperties(**props), ctx)
    message = Message(
        body=payload, message_id="m", send_port="Port", content_type=content_type, headers=dict(headers or {})
    )
    return encoder.process(message)


# -- openssl and an independent MIME reader -------------------------------------------------------


def openssl(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, check=False, timeout=60)
    if ok:
        assert result.returncode == 0, f"openssl {' '.join(map(str, args))} failed:\n{result.stderr.decode()}"
    return result


def parse_entity(data: bytes) -> tuple[dict[str, str], bytes]:
    """RFC 2045 §3: header lines (CRLF, unfolded), an empty line, the body; names in lower case."""
    head, sep, body = data.partition(CRLF + CRLF)
    assert sep, "no empty line after the headers"
    assert b"\n" not in head.replace(CRLF, b"") and b"\r" not in head.replace(CRLF, b""), "bare CR/LF in headers"
    headers: dict[str, str] = {}
    name = ""
    for line in head.decode("ascii").split("\r\n"):
        if line[:1] in {" ", "\t"}:
            headers[name] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        assert colon, f"not a header line: {line!r}"
        name = name.strip().lower()
        assert name not in headers, f"duplicate header {name}"
        headers[name] = value.strip()
    return headers, body


def param(header_value: str, name: str) -> str:
    match = re.search(rf';\s*{name}=("([^"]*)"|[^;\s]+)', header_value)
    assert match, f"no {name} parameter in {header_value!r}"
    return match.group(2) if match.group(2) is not None else match.group(1)


def split_signed(headers: dict[str, str], body: bytes) -> tuple[bytes, bytes]:
    """multipart/signed (RFC 1847, RFC 2046 §5.1.1): the signed part's exact bytes and the DER signature.

    The signed content is what lies between the CRLF ending the first delimiter line and the CRLF
    that precedes the next delimiter (that CRLF belongs to the delimiter).
    """
    content_type = headers["content-type"]
    assert content_type.startswith("multipart/signed;")
    assert param(content_type, "protocol") == "application/pkcs7-signature"
    delimiter = b"--" + param(content_type, "boundary").encode()
    start = 0 if body.startswith(delimiter) else body.index(CRLF + delimiter) + 2
    start = body.index(CRLF, start) + 2  # end of the first delimiter line
    end = body.index(CRLF + delimiter, start)
    signed = body[start:end]
    rest = body[end + 2 + len(delimiter) :]
    assert rest.startswith(CRLF), "expected a second body part"
    sig_start = 2
    sig_end = rest.index(CRLF + delimiter, sig_start)
    assert rest[sig_end + 2 + len(delimiter) :].startswith(b"--"), "expected the close delimiter after two parts"
    sig_headers, sig_body = parse_entity(rest[sig_start:sig_end])
    assert sig_headers["content-type"].startswith("application/pkcs7-signature")
    assert sig_headers["content-transfer-encoding"].lower() == "base64"
    return signed, decode_cte("base64", sig_body)


def decode_cte(cte: str, body: bytes) -> bytes:
    """Undo a Content-Transfer-Encoding (RFC 2045 §6), checking the encoded form is well made."""
    cte = cte.lower()
    if cte == "binary":
        return body
    lines = body.split(CRLF)
    assert all(len(line) <= 76 for line in lines), "encoded line longer than 76 characters"
    if cte == "base64":
        assert body == b"" or body.endswith(CRLF), "base64 lines end with CRLF"
        joined = b"".join(lines)
        assert b"\n" not in joined and b"\r" not in joined
        return base64.b64decode(joined, validate=True)
    if cte == "quoted-printable":
        assert all(0x20 <= b <= 0x7E for b in body.replace(CRLF, b"")), "quoted-printable is printable ASCII"
        unfolded = body.replace(b"=" + CRLF, b"")  # soft line breaks
        assert CRLF not in unfolded, "a hard line break would turn into the platform's newline"
        out = bytearray()
        i = 0
        while i < len(unfolded):
            if unfolded[i : i + 1] == b"=":
                out.append(int(unfolded[i + 1 : i + 3], 16))
                i += 3
            else:
                out.append(unfolded[i])
                i += 1
        return bytes(out)
    raise AssertionError(f"unexpected Content-Transfer-Encoding {cte!r}")


def sha1_of_pem(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER), usedforsecurity=False).hexdigest().upper()


def cipher_in(entity_file: Path, entity_body: bytes, size: int) -> set[str]:
    """AES names openssl finds in the enveloped-data; -print dumps the ciphertext, so asn1parse for big ones."""
    if size <= 64 * 1024:
        printed = openssl("cms", "-cmsout", "-print", "-in", entity_file).stdout.decode()
        return set(re.findall(r"contentEncryptionAlgorithm:\s*\n\s*algorithm: (\S+)", printed))
    der = entity_file.with_suffix(".p7m.der")
    der.write_bytes(base64.b64decode(b"".join(entity_body.split(CRLF)), validate=True))
    parsed = openssl("asn1parse", "-inform", "DER", "-in", der).stdout.decode()
    return set(re.findall(r"OBJECT\s*:(aes-\d+-cbc)", parsed))


def decrypt(env: Env, work: Path, entity: bytes, *, key: Path | None = None, cert: Path | None = None) -> bytes:
    src, out = work / "entity.eml", work / "decrypted.eml"
    src.write_bytes(entity)
    openssl(
        "cms", "-decrypt", "-binary", "-in", src, "-inkey", key or env.partner_key,
        "-recip", cert or env.partner_pem, "-out", out,
    )  # fmt: skip
    return out.read_bytes()


def verify(
    env: Env, work: Path, signature_type: str, data: bytes, *, certfile: Path | None = None
) -> tuple[bytes, str, dict[str, str]]:
    """Verify with openssl; returns the signed content, the signer's SHA-1 thumbprint and the headers seen."""
    headers, body = parse_entity(data)
    content, signer = work / "verified.eml", work / "signer-out.pem"
    extra: list[str | Path] = ["-certfile", certfile] if certfile else []
    if signature_type == "BlobSign":
        assert headers["content-type"].startswith("application/pkcs7-mime; smime-type=signed-data")
        src = work / "signed.eml"
        src.write_bytes(data)
        openssl(
            "cms", "-verify", "-binary", "-in", src, "-CAfile", env.ca_pem, *extra,
            "-signer", signer, "-out", content,
        )  # fmt: skip
    else:
        part, der = split_signed(headers, body)
        part_file, sig_file = work / "part.bin", work / "sig.der"
        part_file.write_bytes(part)
        sig_file.write_bytes(der)
        openssl(
            "cms", "-verify", "-binary", "-inform", "DER", "-in", sig_file, "-content", part_file,
            "-CAfile", env.ca_pem, *extra, "-signer", signer, "-out", content,
        )  # fmt: skip
        assert content.read_bytes() == part
    return content.read_bytes(), sha1_of_pem(signer), headers


def payload_of(inner: bytes, *, content_type: str, cte: str) -> tuple[bytes, dict[str, str]]:
    headers, body = parse_entity(inner)
    assert headers["content-type"] == content_type
    assert headers["content-transfer-encoding"] == cte
    return decode_cte(cte, body), headers


# -- the matrix -----------------------------------------------------------------------------------


def _matrix() -> list[Any]:
    cases = []
    for signature_type in ("NoSign", "ClearSign", "BlobSign"):
        for encryption in ("AES128", "AES192", "AES256", None):
            for cte in ("base64", "binary"):
                for signer in SIGNERS if signature_type != "NoSign" else (None,):
                    for payload in PAYLOADS:
                        parts = [signature_type, encryption or "clear", cte, signer, payload]
                        cases.append(
                            pytest.param(
                                signature_type,
                                encryption,
                                cte,
                                signer,
                                payload,
                                id="-".join(p for p in parts if p),
                            )
                        )
    return cases


MATRIX = _matrix()


@pytest.mark.parametrize(("signature_type", "encryption", "cte", "signer", "payload_name"), MATRIX)
def test_interop_matrix(
    env: Env,
    tmp_path: Path,
    signature_type: str,
    encryption: str | None,
    cte: str,
    signer: str | None,
    payload_name: str,
) -> None:
    payload, content_type = PAYLOADS[payload_name]
    props: dict[str, Any] = {"signature_type": signature_type, "content_transfer_encoding": cte}
    if encryption:
        props |= {"enable_encryption": True, "encryption_algorithm": encryption}
    out = encode(env, payload, signer=signer or "rsa2048", content_type=content_type, **props)

    outer, outer_body = parse_entity(out.body)
    assert outer["mime-version"] == "1.0"
    assert out.entity_content_type == outer["content-type"]
    inner = out.body
    if encryption:
        assert outer["content-type"].startswith("application/pkcs7-mime; smime-type=enveloped-data")
        assert outer["content-transfer-encoding"] == "base64"
        assert out.recipient_thumbprint == env.partner.thumbprint
        if len(payload) >= 32:
            assert payload[:32] not in out.body, "payload visible in an encrypted entity"
        inner = decrypt(env, tmp_path, out.body)
        assert cipher_in(tmp_path / "entity.eml", outer_body, len(out.body)) == {_CIPHER_NAMES[encryption]}
    else:
        assert out.recipient_thumbprint is None

    if signature_type == "NoSign":
        assert out.signer_thumbprint is None
    else:
        assert signer is not None
        expected = env.signers[signer].thumbprint
        assert out.signer_thumbprint == expected
        inner, seen, signed_headers = verify(env, tmp_path, signature_type, inner)
        assert seen == expected
        if signature_type == "ClearSign":
            assert param(signed_headers["content-type"], "micalg") == "sha-256"

    recovered, _ = payload_of(inner, content_type=content_type, cte=cte)
    assert recovered == payload


# -- signing algorithms, certificates left out of the message -------------------------------------


@pytest.mark.parametrize("signer", ["rsa2048", "ec"])
@pytest.mark.parametrize(
    ("algorithm", "micalg", "openssl_name"), [("SHA384", "sha-384", "sha384"), ("SHA512", "sha-512", "sha512")]
)
@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_signing_algorithm(
    env: Env, tmp_path: Path, signature_type: str, algorithm: str, micalg: str, openssl_name: str, signer: str
) -> None:
    out = encode(env, TEXT, signer=signer, signature_type=signature_type, signing_algorithm=algorithm)
    content, seen, headers = verify(env, tmp_path, signature_type, out.body)
    assert seen == env.signers[signer].thumbprint
    assert payload_of(content, content_type="application/octet-stream", cte="base64")[0] == TEXT
    if signature_type == "ClearSign":
        assert param(headers["content-type"], "micalg") == micalg
        printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "sig.der").stdout.decode()
    else:
        printed = openssl("cms", "-cmsout", "-print", "-in", tmp_path / "signed.eml").stdout.decode()
    assert set(re.findall(r"digestAlgorithm:\s*\n\s*algorithm: (\S+)", printed)) == {openssl_name}


@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_without_signing_cert_in_message(env: Env, tmp_path: Path, signature_type: str, encrypted: bool) -> None:
    out = encode(
        env,
        BINARY,
        signer="rsa3072",
        signature_type=signature_type,
        add_signing_cert_to_message=False,
        enable_encryption=encrypted,
    )
    signed = decrypt(env, tmp_path, out.body) if encrypted else out.body
    # The receiver cannot verify without being given the certificate...
    headers, body = parse_entity(signed)
    if signature_type == "BlobSign":
        (tmp_path / "alone.eml").write_bytes(signed)
        refused = openssl("cms", "-verify", "-binary", "-in", tmp_path / "alone.eml", "-CAfile", env.ca_pem, ok=False)
    else:
        part, der = split_signed(headers, body)
        (tmp_path / "alone.der").write_bytes(der)
        (tmp_path / "alone.part").write_bytes(part)
        refused = openssl(
            "cms", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "alone.der",
            "-content", tmp_path / "alone.part", "-CAfile", env.ca_pem, ok=False,
        )  # fmt: skip
    assert refused.returncode != 0
    assert b"signer certificate not found" in refused.stderr.lower()
    # ...and can with it (-certfile), as a partner holding our certificate does.
    content, seen, _ = verify(env, tmp_path, signature_type, signed, certfile=env.signer_pems["rsa3072"])
    assert seen == env.signers["rsa3072"].thumbprint
    assert payload_of(content, content_type="application/octet-stream", cte="base64")[0] == BINARY


@pytest.mark.parametrize("payload_name", ["text", "binary"])
def test_clear_signed_entity_readable_by_openssl_smime_parser(env: Env, tmp_path: Path, payload_name: str) -> None:
    # What a mail client or AS2 peer does: hand the whole multipart/signed entity to its S/MIME reader.
    payload, content_type = PAYLOADS[payload_name]
    out = encode(env, payload, content_type=content_type, signature_type="ClearSign")
    (tmp_path / "signed.eml").write_bytes(out.body)
    openssl("cms", "-verify", "-in", tmp_path / "signed.eml", "-CAfile", env.ca_pem, "-out", tmp_path / "content")
    recovered, _ = payload_of((tmp_path / "content").read_bytes(), content_type=content_type, cte="base64")
    assert recovered == payload


# -- quoted-printable -----------------------------------------------------------------------------


@pytest.mark.parametrize("payload_name", ["text", "binary", "empty"])
@pytest.mark.parametrize(
    ("signature_type", "encrypted"),
    [("NoSign", False), ("NoSign", True), ("ClearSign", False), ("BlobSign", True)],
    ids=["plain", "encrypted", "clearsign", "blobsign-encrypted"],
)
def test_quoted_printable_round_trips(
    env: Env, tmp_path: Path, signature_type: str, encrypted: bool, payload_name: str
) -> None:
    payload, content_type = PAYLOADS[payload_name]
    out = encode(
        env,
        payload,
        content_type=content_type,
        signature_type=signature_type,
        enable_encryption=encrypted,
        content_transfer_encoding="quoted-printable",
    )
    inner = decrypt(env, tmp_path, out.body) if encrypted else out.body
    if signature_type != "NoSign":
        inner, _, _ = verify(env, tmp_path, signature_type, inner)
    recovered, _ = payload_of(inner, content_type=content_type, cte="quoted-printable")
    assert recovered == payload


# -- recipients -----------------------------------------------------------------------------------


def test_ec_recipient_is_written_to_with_ecdh(env: Env, tmp_path: Path) -> None:
    # RFC 5753 ephemeral-static ECDH (tests/test_interop_as2.py has every cipher and P-384).
    out = encode(
        env,
        TEXT,
        signature_type="BlobSign",
        enable_encryption=True,
        encryption_thumbprint=env.partner_ec.thumbprint,
    )
    assert out.recipient_thumbprint == env.partner_ec.thumbprint
    key = env.partner_ec.write_key_pem(tmp_path / "ec.key")
    inner = decrypt(env, tmp_path, out.body, key=key, cert=env.partner_ec.write_cert_pem(tmp_path / "ec.pem"))
    content, _, _ = verify(env, tmp_path, "BlobSign", inner)
    assert payload_of(content, content_type="application/octet-stream", cte="base64")[0] == TEXT


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_encryption_thumbprint_override_header(env: Env, tmp_path: Path, as_bytes: bool) -> None:
    tp = env.partner_b.thumbprint
    pasted = "\u200e" + " ".join(tp[i : i + 2] for i in range(0, 40, 2)).lower()
    header: str | bytes = pasted.encode() if as_bytes else pasted
    out = encode(
        env,
        BINARY,
        signature_type="BlobSign",
        enable_encryption=True,
        headers={"sendpipe-encryption-thumbprint": header},
    )
    assert out.recipient_thumbprint == tp
    # The send port's own partner cannot read it...
    (tmp_path / "entity.eml").write_bytes(out.body)
    refused = openssl(
        "cms", "-decrypt", "-binary", "-in", tmp_path / "entity.eml", "-inkey", env.partner_key,
        "-recip", env.partner_pem, "-out", tmp_path / "nope", ok=False,
    )  # fmt: skip
    assert refused.returncode != 0
    (tmp_path / "nope").unlink(missing_ok=True)
    refused = openssl(
        "cms", "-decrypt", "-binary", "-in", tmp_path / "entity.eml", "-inkey", env.partner_key,
        "-out", tmp_path / "nope", ok=False,
    )  # fmt: skip
    # Without -recip OpenSSL tries the key on every RecipientInfo and, where it fails, goes on with a
    # random content key (the RFC 3218 §2.3.2 countermeasure): the content's CBC padding check then
    # fails, except about 1 time in 256, when it "succeeds" with garbage. Either way, no payload.
    nope = tmp_path / "nope"
    assert refused.returncode != 0 or (nope.exists() and BINARY not in nope.read_bytes())
    # ...the partner named in the header can.
    inner = decrypt(env, tmp_path, out.body, key=env.partner_b_key, cert=env.partner_b_pem)
    content, _, _ = verify(env, tmp_path, "BlobSign", inner)
    assert payload_of(content, content_type="application/octet-stream", cte="base64")[0] == BINARY


def test_override_header_must_name_a_store_certificate(env: Env) -> None:
    with pytest.raises(CertificateError) as exc:
        encode(env, TEXT, enable_encryption=True, headers={"sendpipe-encryption-thumbprint": "AB" * 20})
    assert exc.value.code == "encryption-cert-not-found"
    with pytest.raises(MessageError) as bad:
        encode(env, TEXT, enable_encryption=True, headers={"sendpipe-encryption-thumbprint": "../partner.pem"})
    assert bad.value.code == "invalid-thumbprint"


# -- body part headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "disposition"),
    [
        ("C:\\Users\\ops\\outbox\\orders 2024-06.xml", 'attachment; filename="orders 2024-06.xml"'),
        ("/var/spool/../../etc/passwd", 'attachment; filename="passwd"'),
        ('C:\\out\\we"ird;name.csv', 'attachment; filename="we_ird;name.csv"'),
        ("a\r\nX-Injected: 1.txt", 'attachment; filename="a__X-Injected: 1.txt"'),
        ("Bestellung-M\u00e4rz.xml", "attachment; filename*=utf-8''Bestellung-M%C3%A4rz.xml"),
        (None, 'attachment; filename="m"'),
    ],
    ids=["windows-path", "unix-path", "quote-and-semicolon", "crlf", "non-ascii", "no-header"],
)
def test_body_part_as_attachment(env: Env, tmp_path: Path, filename: str | None, disposition: str) -> None:
    headers = {"sendpipe-filename": filename} if filename is not None else {}
    out = encode(
        env,
        TEXT,
        content_type="text/plain",
        headers=headers,
        signature_type="BlobSign",
        enable_encryption=True,
        send_body_part_as_attachment=True,
    )
    content, _, _ = verify(env, tmp_path, "BlobSign", decrypt(env, tmp_path, out.body))
    recovered, inner_headers = payload_of(content, content_type="text/plain", cte="base64")
    assert recovered == TEXT
    assert inner_headers["content-disposition"] == disposition


def test_no_content_disposition_by_default(env: Env) -> None:
    out = encode(env, TEXT, headers={"sendpipe-filename": "x.txt"})
    headers, _ = parse_entity(out.body)
    assert "content-disposition" not in headers


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain\r\nBcc: someone@example.com",
        "text/plain\nX-Injected: 1",
        "text/plain;\r\nX-Injected: 1",
        "text/plain; charset=utf-8\r\n\r\nforged body",
        "text/plain;\r\n\r\nforged body",
        "text/plain;\n\nforged body",
        "text/plain;\u2028x=y",
    ],
    ids=[
        "crlf-header",
        "lf-header",
        "semicolon-crlf-header",
        "param-crlf-body",
        "semicolon-crlf-body",
        "semicolon-lf-body",
        "unicode-line-separator",
    ],
)
def test_content_type_with_line_breaks_is_refused(env: Env, content_type: str) -> None:
    with pytest.raises(MessageError) as exc:
        encode(env, TEXT, content_type=content_type, signature_type="ClearSign")
    assert exc.value.code == "invalid-content-type"


def test_matrix_size() -> None:
    # 3 signature types x (3 ciphers + clear) x 2 transfer encodings x signers (1 for NoSign, 3 otherwise) x 4 payloads
    assert len(MATRIX) == (1 + 3 + 3) * 4 * 2 * 4 == 224
