"""Interop of the S/MIME 4.0 and AS2 encoder properties (SPEC "Config file", "Messages"), checked with the
``openssl`` command line (and cryptography's PKCS#7 reader where it supports the structure).

- ``sendpipe-mic``: equal to hashlib over the bytes openssl says were signed (RFC 4130 §7.3.1).
- ``micalg_format``, ``legacy_media_types``: the spellings, and openssl's S/MIME reader still opens the entity.
- ``add_signing_chain``: a signer issued by an intermediate CA verifies against the root alone only with it;
  the root is never in the signature.
- AES192, RSA-OAEP key transport (RFC 4055), RSASSA-PSS signatures (RFC 4056): decrypted / verified by openssl,
  with the algorithm identifiers openssl reads out of the DER.

cryptography's ``pkcs7_decrypt_*`` (50.x) supports neither AES-192 nor OAEP ("Only AES (with key sizes 128
or 256)", "Only RSA with PKCS #1 v1.5 padding"), so those are openssl's alone.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import zlib
from pathlib import Path
from typing import Any

import pytest
import test_interop as ti
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from pki import Issued, TestPKI, write_other_people, write_personal_pem, write_personal_pfx
from pydantic import SecretStr, ValidationError

from worker.errors import CertificateError
from worker.host import routing
from worker.identity.store import CertificateStore
from worker.message import Message
from worker.pipeline.encoder import EncoderProperties

CRLF = b"\r\n"
_HASHLIB = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}
_MICALG = {"SHA256": "sha-256", "SHA384": "sha-384", "SHA512": "sha-512"}


@dataclasses.dataclass(frozen=True)
class ChainEnv:
    base: ti.Env  # every signer of test_interop plus "chained" (issued by the intermediate CA)
    via_other_people: ti.Env  # the intermediate (and the root) only in other-people/
    intermediate: Issued
    root_der: bytes
    ec_partners: dict[str, tuple[Issued, Path, Path]]  # curve -> certificate, its PEM, its key's PEM
    p521: Issued  # in the store, but not a curve sendpipe writes to


@pytest.fixture(scope="module")
def chain_env(
    tmp_path_factory: pytest.TempPathFactory,
    pki: TestPKI,
    signer_rsa2048: Issued,
    signer_rsa3072: Issued,
    signer_ec: Issued,
    partner: Issued,
) -> ChainEnv:
    root = tmp_path_factory.mktemp("as2")
    stores = root / "stores"
    intermediate = pki.intermediate()
    chained = pki.issue("sendpipe signer via intermediate", issuer=intermediate, key_slot="chained")
    signers = {"rsa2048": signer_rsa2048, "rsa3072": signer_rsa3072, "ec": signer_ec, "chained": chained}
    # svc-a: the intermediate comes with the PKCS#12 (as Windows exports "include all certificates in the path").
    for name, issued in signers.items():
        if name == "chained":
            write_personal_pfx(stores, "svc-a", name, issued, b"pw", cas=[intermediate])
        else:
            write_personal_pem(stores, "svc-a", name, issued)
    write_other_people(stores, "svc-a", "partner", partner)
    write_other_people(stores, "svc-a", "root-ca", pki.ca)
    p256 = pki.issue("EC P-256 partner", key_type="ec-p256", usage="encrypt", key_slot="partner")
    p384 = pki.issue("EC P-384 partner", usage="encrypt", key=ec.generate_private_key(ec.SECP384R1()))
    p521 = pki.issue("EC P-521 partner", usage="encrypt", key=ec.generate_private_key(ec.SECP521R1()))
    for name, issued in (("p256", p256), ("p384", p384), ("p521", p521)):
        write_other_people(stores, "svc-a", name, issued)
    # svc-b: the signer alone in personal/, the intermediate and the root CA certificate in other-people/.
    write_personal_pem(stores, "svc-b", "chained", chained)
    write_other_people(stores, "svc-b", "partner", partner)
    write_other_people(stores, "svc-b", "issuing-ca", intermediate, fmt="pem")
    write_other_people(stores, "svc-b", "root-ca", pki.ca)
    store_a = CertificateStore.open(stores, "svc-a", SecretStr("pw"))
    store_b = CertificateStore.open(stores, "svc-b")
    assert store_a.problems == () and store_b.problems == ()
    files = root / "files"
    base = ti.Env(
        store=store_a,
        ca_pem=pki.ca_pem,
        signers=signers,
        signer_pems={name: s.write_cert_pem(files / f"signer-{name}.pem") for name, s in signers.items()},
        partner=partner,
        partner_pem=partner.write_cert_pem(files / "partner.pem"),
        partner_key=partner.write_key_pem(files / "partner.key"),
        partner_b=partner,
        partner_b_pem=files / "partner.pem",
        partner_b_key=files / "partner.key",
        partner_ec=partner,
    )
    ec_partners = {
        name: (issued, issued.write_cert_pem(files / f"{name}.pem"), issued.write_key_pem(files / f"{name}.key"))
        for name, issued in (("P-256", p256), ("P-384", p384))
    }
    return ChainEnv(base, dataclasses.replace(base, store=store_b), intermediate, pki.ca.cert_der(), ec_partners, p521)


def _der_of(entity: bytes, signature_type: str) -> bytes:
    """The DER of the entity's CMS structure (the detached signature of a ClearSign entity)."""
    headers, body = ti.parse_entity(entity)
    if signature_type == "ClearSign":
        return ti.split_signed(headers, body)[1]
    return base64.b64decode(b"".join(body.split(CRLF)), validate=True)


# -- sendpipe-mic (RFC 4130 §7.3.1) ---------------------------------------------------------------


@pytest.mark.parametrize("payload_name", ["text", "binary", "1mib"])
@pytest.mark.parametrize("signer", ["rsa2048", "ec"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_mic_is_the_digest_of_the_bytes_openssl_verified(
    chain_env: ChainEnv, tmp_path: Path, signature_type: str, encrypted: bool, signer: str, payload_name: str
) -> None:
    env = chain_env.base
    payload, content_type = ti.PAYLOADS[payload_name]
    out = ti.encode(
        env,
        payload,
        signer=signer,
        content_type=content_type,
        signature_type=signature_type,
        enable_encryption=encrypted,
    )
    inner = ti.decrypt(env, tmp_path, out.body) if encrypted else out.body
    # openssl's -out: for BlobSign the encapsulated content, for ClearSign the first part (checked equal
    # to it inside ti.verify) -- the MIME entity that was signed, its headers included.
    signed, _, _ = ti.verify(env, tmp_path, signature_type, inner)
    assert signed.startswith(f"Content-Type: {content_type}\r\n".encode())
    expected = base64.b64encode(hashlib.sha256(signed).digest()).decode() + ", sha-256"
    assert out.mic == expected
    delivered = routing.delivery(out, "P", "partner.key", routing.Identity("SendHost", "inst-1", "svc-a"))
    assert delivered.headers["sendpipe-mic"] == expected


@pytest.mark.parametrize("algorithm", ["SHA384", "SHA512"])
@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_mic_follows_the_signing_algorithm(
    chain_env: ChainEnv, tmp_path: Path, signature_type: str, algorithm: str
) -> None:
    env = chain_env.base
    out = ti.encode(env, ti.TEXT, signature_type=signature_type, signing_algorithm=algorithm)
    signed, _, _ = ti.verify(env, tmp_path, signature_type, out.body)
    digest = _HASHLIB[algorithm](signed).digest()
    assert out.mic == f"{base64.b64encode(digest).decode()}, {_MICALG[algorithm]}"


def test_no_mic_when_not_signed_and_a_producers_mic_header_is_dropped(chain_env: ChainEnv) -> None:
    env = chain_env.base
    out = ti.encode(env, ti.TEXT, enable_encryption=True, headers={"sendpipe-mic": "forged, sha-256", "keep": "1"})
    assert out.mic is None
    delivered = routing.delivery(out, "P", "partner.key", routing.Identity("SendHost", "inst-1", "svc-a"))
    assert "sendpipe-mic" not in delivered.headers
    assert delivered.headers["keep"] == "1"


def test_the_mic_check_fails_on_a_changed_byte(chain_env: ChainEnv, tmp_path: Path) -> None:
    # The oracle above is not vacuous: one byte more in what was signed gives another MIC.
    env = chain_env.base
    out = ti.encode(env, ti.BINARY, signature_type="BlobSign")
    signed, _, _ = ti.verify(env, tmp_path, "BlobSign", out.body)
    assert out.mic != base64.b64encode(hashlib.sha256(signed + b"\r\n").digest()).decode() + ", sha-256"
    assert out.mic != base64.b64encode(hashlib.sha256(out.body).digest()).decode() + ", sha-256"


# -- micalg_format, legacy_media_types ------------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "legacy"), [("SHA256", "sha256"), ("SHA384", "sha384"), ("SHA512", "sha512")])
def test_legacy_micalg(chain_env: ChainEnv, tmp_path: Path, algorithm: str, legacy: str) -> None:
    env = chain_env.base
    out = ti.encode(env, ti.TEXT, signature_type="ClearSign", signing_algorithm=algorithm, micalg_format="legacy")
    headers, _ = ti.parse_entity(out.body)
    assert ti.param(headers["content-type"], "micalg") == legacy
    (tmp_path / "signed.eml").write_bytes(out.body)
    ti.openssl("cms", "-verify", "-in", tmp_path / "signed.eml", "-CAfile", env.ca_pem, "-out", tmp_path / "content")
    recovered, _ = ti.payload_of(
        (tmp_path / "content").read_bytes(), content_type="application/octet-stream", cte="base64"
    )
    assert recovered == ti.TEXT


def test_default_spellings_are_unchanged(chain_env: ChainEnv) -> None:
    env = chain_env.base
    clear = ti.encode(env, ti.TEXT, signature_type="ClearSign", enable_encryption=False)
    headers, _ = ti.parse_entity(clear.body)
    assert headers["content-type"].startswith(
        'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="'
    )
    assert b'\r\nContent-Type: application/pkcs7-signature; name="smime.p7s"\r\n' in clear.body
    blob = ti.encode(env, ti.TEXT, signature_type="BlobSign", enable_encryption=True)
    assert blob.entity_content_type == 'application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"'


@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_legacy_media_types_read_by_openssls_smime_parser(
    chain_env: ChainEnv, tmp_path: Path, signature_type: str
) -> None:
    env = chain_env.base
    out = ti.encode(env, ti.BINARY, signature_type=signature_type, enable_encryption=True, legacy_media_types=True)
    assert out.entity_content_type == 'application/x-pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"'
    inner = ti.decrypt(env, tmp_path, out.body)  # openssl's S/MIME reader takes the whole entity
    headers, _ = ti.parse_entity(inner)
    if signature_type == "ClearSign":
        assert ti.param(headers["content-type"], "protocol") == "application/x-pkcs7-signature"
        assert b'\r\nContent-Type: application/x-pkcs7-signature; name="smime.p7s"\r\n' in inner
        assert b"application/pkcs7" not in inner
    else:
        assert headers["content-type"] == 'application/x-pkcs7-mime; smime-type=signed-data; name="smime.p7m"'
    (tmp_path / "inner.eml").write_bytes(inner)
    # Whole entity into openssl's S/MIME reader; -binary only for signed-data (with it, openssl's
    # multipart/signed reader re-ends the first part's lines and the digest no longer matches).
    binary = ["-binary"] if signature_type == "BlobSign" else []
    ti.openssl(
        "cms", "-verify", *binary, "-in", tmp_path / "inner.eml", "-CAfile", env.ca_pem,
        "-out", tmp_path / "content",
    )  # fmt: skip
    recovered, _ = ti.payload_of(
        (tmp_path / "content").read_bytes(), content_type="application/octet-stream", cte="base64"
    )
    assert recovered == ti.BINARY


# -- add_signing_chain ----------------------------------------------------------------------------


def _verify_against_root_only(env: ti.Env, tmp_path: Path, signature_type: str, entity: bytes) -> Any:
    headers, body = ti.parse_entity(entity)
    if signature_type == "BlobSign":
        (tmp_path / "signed.eml").write_bytes(entity)
        return ti.openssl(
            "cms", "-verify", "-binary", "-in", tmp_path / "signed.eml", "-CAfile", env.ca_pem,
            "-out", tmp_path / "content", ok=False,
        )  # fmt: skip
    part, der = ti.split_signed(headers, body)
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "part").write_bytes(part)
    return ti.openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "sig.der", "-content", tmp_path / "part",
        "-CAfile", env.ca_pem, "-out", tmp_path / "content", ok=False,
    )  # fmt: skip


@pytest.mark.parametrize("where", ["pkcs12", "other-people"])
@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_signing_chain_lets_a_root_only_partner_verify(
    chain_env: ChainEnv, tmp_path: Path, signature_type: str, where: str
) -> None:
    env = chain_env.base if where == "pkcs12" else chain_env.via_other_people
    without = ti.encode(env, ti.TEXT, signer="chained", signature_type=signature_type)
    refused = _verify_against_root_only(env, tmp_path, signature_type, without.body)
    assert refused.returncode != 0
    assert b"unable to get local issuer certificate" in refused.stderr

    out = ti.encode(env, ti.TEXT, signer="chained", signature_type=signature_type, add_signing_chain=True)
    accepted = _verify_against_root_only(env, tmp_path, signature_type, out.body)
    assert accepted.returncode == 0, accepted.stderr.decode()
    recovered, _ = ti.payload_of(
        (tmp_path / "content").read_bytes(), content_type="application/octet-stream", cte="base64"
    )
    assert recovered == ti.TEXT
    # cryptography's PKCS#7 reader (strict DER: the SET OF sorted) lists the signer and the intermediate;
    # never the root.
    certs = pkcs7.load_der_pkcs7_certificates(_der_of(out.body, signature_type))
    ders = [c.public_bytes(serialization.Encoding.DER) for c in certs]
    assert ders == sorted([env.signers["chained"].cert_der(), chain_env.intermediate.cert_der()])
    assert chain_env.root_der not in ders


def test_signing_chain_of_a_root_issued_signer_adds_nothing(chain_env: ChainEnv) -> None:
    env = chain_env.base  # the root CA certificate is in this store's other-people/: still never sent
    plain = ti.encode(env, ti.TEXT, signer="rsa2048", signature_type="BlobSign")
    chained = ti.encode(env, ti.TEXT, signer="rsa2048", signature_type="BlobSign", add_signing_chain=True)
    for out in (plain, chained):
        certs = pkcs7.load_der_pkcs7_certificates(_der_of(out.body, "BlobSign"))
        assert [c.public_bytes(serialization.Encoding.DER) for c in certs] == [env.signers["rsa2048"].cert_der()]


def test_signing_chain_without_the_signer_certificate(chain_env: ChainEnv, tmp_path: Path) -> None:
    env = chain_env.base
    out = ti.encode(
        env,
        ti.TEXT,
        signer="chained",
        signature_type="BlobSign",
        add_signing_chain=True,
        add_signing_cert_to_message=False,
    )
    certs = pkcs7.load_der_pkcs7_certificates(_der_of(out.body, "BlobSign"))
    assert [c.public_bytes(serialization.Encoding.DER) for c in certs] == [chain_env.intermediate.cert_der()]
    _, seen, _ = ti.verify(env, tmp_path, "BlobSign", out.body, certfile=env.signer_pems["chained"])
    assert seen == env.signers["chained"].thumbprint


# -- AES192, RSA-OAEP, RSASSA-PSS -----------------------------------------------------------------


def _after(parsed: str, marker: str, count: int) -> list[str]:
    """The ``count`` asn1parse elements after the line with ``marker``, as "TYPE[ :value]"."""
    lines = parsed.splitlines()
    at = next(i for i, line in enumerate(lines) if marker in line)
    out = []
    for line in lines[at + 1 : at + 1 + count]:
        kind, _, value = re.split(r"(?:prim|cons): ", line, maxsplit=1)[1].partition(":")
        out.append(f"{kind.strip()} :{value.strip()}" if value else kind.strip())
    return out


def _asn1(tmp_path: Path, der: bytes) -> str:
    (tmp_path / "parse.der").write_bytes(der)
    return ti.openssl("asn1parse", "-inform", "DER", "-in", tmp_path / "parse.der").stdout.decode()


@pytest.mark.parametrize("payload_name", ["text", "empty", "1mib"])
@pytest.mark.parametrize("signature_type", ["NoSign", "ClearSign", "BlobSign"])
def test_aes192_decrypts_with_openssl(
    chain_env: ChainEnv, tmp_path: Path, signature_type: str, payload_name: str
) -> None:
    env = chain_env.base
    payload, content_type = ti.PAYLOADS[payload_name]
    out = ti.encode(
        env,
        payload,
        content_type=content_type,
        signature_type=signature_type,
        enable_encryption=True,
        encryption_algorithm="AES192",
    )
    inner = ti.decrypt(env, tmp_path, out.body)
    _, outer_body = ti.parse_entity(out.body)
    assert ti.cipher_in(tmp_path / "entity.eml", outer_body, len(out.body)) == {"aes-192-cbc"}
    if signature_type != "NoSign":
        inner, _, _ = ti.verify(env, tmp_path, signature_type, inner)
    assert ti.payload_of(inner, content_type=content_type, cte="base64")[0] == payload


@pytest.mark.parametrize("cipher", ["AES128", "AES192", "AES256"])
@pytest.mark.parametrize("payload_name", ["binary", "1mib"])
def test_rsa_oaep_key_transport_decrypts_with_openssl(
    chain_env: ChainEnv, tmp_path: Path, payload_name: str, cipher: str
) -> None:
    env = chain_env.base
    payload, content_type = ti.PAYLOADS[payload_name]
    out = ti.encode(
        env,
        payload,
        content_type=content_type,
        signature_type="BlobSign",
        enable_encryption=True,
        encryption_algorithm=cipher,
        key_encryption_algorithm="RSA-OAEP",
    )
    inner = ti.decrypt(env, tmp_path, out.body)
    content, _, _ = ti.verify(env, tmp_path, "BlobSign", inner)
    assert ti.payload_of(content, content_type=content_type, cte="base64")[0] == payload
    parsed = _asn1(tmp_path, _der_of(out.body, "BlobSign"))
    # RFC 4055 §4.1: id-RSAES-OAEP with [0] sha256, [1] mgf1(sha256); no rsaEncryption key transport left.
    assert _after(parsed, ":rsaesOaep", 11) == [
        "SEQUENCE", "cont [ 0 ]", "SEQUENCE", "OBJECT :sha256", "NULL",
        "cont [ 1 ]", "SEQUENCE", "OBJECT :mgf1", "SEQUENCE", "OBJECT :sha256", "NULL",
    ]  # fmt: skip
    assert "rsaEncryption" not in parsed


def test_pkcs1v15_key_transport_stays_the_default(chain_env: ChainEnv, tmp_path: Path) -> None:
    env = chain_env.base
    out = ti.encode(env, ti.TEXT, enable_encryption=True)
    parsed = _asn1(tmp_path, _der_of(out.body, "BlobSign"))
    assert "rsaEncryption" in parsed and "rsaesOaep" not in parsed


@pytest.mark.parametrize("algorithm", ["SHA256", "SHA384", "SHA512"])
@pytest.mark.parametrize("payload_name", ["text", "1mib"])
@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_rsassa_pss_verifies_with_openssl(
    chain_env: ChainEnv, tmp_path: Path, signature_type: str, payload_name: str, algorithm: str
) -> None:
    env = chain_env.base
    payload, content_type = ti.PAYLOADS[payload_name]
    out = ti.encode(
        env,
        payload,
        signer="rsa3072",
        content_type=content_type,
        signature_type=signature_type,
        signing_algorithm=algorithm,
        rsa_signature_scheme="PSS",
        enable_encryption=True,
        key_encryption_algorithm="RSA-OAEP",
    )
    inner = ti.decrypt(env, tmp_path, out.body)
    content, seen, _ = ti.verify(env, tmp_path, signature_type, inner)
    assert seen == env.signers["rsa3072"].thumbprint
    assert ti.payload_of(content, content_type=content_type, cte="base64")[0] == payload
    # RFC 4055 §3.1 RSASSA-PSS-params as openssl reads them: hash, MGF1 with the same hash, salt = digest size.
    name, salt = algorithm.lower(), _HASHLIB[algorithm]().digest_size
    assert _after(_asn1(tmp_path, _der_of(inner, signature_type)), ":rsassaPss", 13) == [
        "SEQUENCE", "cont [ 0 ]", "SEQUENCE", f"OBJECT :{name}", "NULL",
        "cont [ 1 ]", "SEQUENCE", "OBJECT :mgf1", "SEQUENCE", f"OBJECT :{name}", "NULL",
        "cont [ 2 ]", f"INTEGER :{salt:02X}",
    ]  # fmt: skip


def test_pss_with_an_ec_signer_is_ecdsa(chain_env: ChainEnv, tmp_path: Path) -> None:
    env = chain_env.base
    out = ti.encode(env, ti.TEXT, signer="ec", signature_type="BlobSign", rsa_signature_scheme="PSS")
    _, seen, _ = ti.verify(env, tmp_path, "BlobSign", out.body)
    assert seen == env.signers["ec"].thumbprint
    assert "ecdsa-with-SHA256" in _asn1(tmp_path, _der_of(out.body, "BlobSign"))


def test_pss_is_refused_by_a_pkcs1_only_check(chain_env: ChainEnv, tmp_path: Path) -> None:
    # The PSS signature really is PSS: verifying it as PKCS #1 v1.5 with the signer's key fails.
    env = chain_env.base
    out = ti.encode(env, ti.TEXT, signature_type="BlobSign", rsa_signature_scheme="PSS")
    (tmp_path / "signed.eml").write_bytes(out.body)
    ti.openssl(
        "cms", "-verify", "-binary", "-in", tmp_path / "signed.eml", "-CAfile", env.ca_pem, "-out", tmp_path / "c"
    )
    der = _der_of(out.body, "BlobSign")
    patched = der.replace(bytes.fromhex("06092a864886f70d01010a"), bytes.fromhex("06092a864886f70d010101"), 1)
    assert patched != der
    (tmp_path / "patched.der").write_bytes(patched)
    refused = ti.openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "patched.der", "-CAfile", env.ca_pem,
        "-out", tmp_path / "c2", ok=False,
    )  # fmt: skip
    assert refused.returncode != 0


# -- the properties model -------------------------------------------------------------------------


def test_new_properties_default_to_todays_output() -> None:
    props = EncoderProperties()
    assert (props.key_encryption_algorithm, props.rsa_signature_scheme) == ("RSA-PKCS1v15", "PKCS1v15")
    assert (props.add_signing_chain, props.micalg_format, props.legacy_media_types) == (False, "rfc5751", False)
    assert EncoderProperties.model_validate({"encryption_algorithm": "aes-192"}).encryption_algorithm == "AES192"


@pytest.mark.parametrize(
    ("name", "value"),
    [("key_encryption_algorithm", "RSA-OAEP-SHA1"), ("rsa_signature_scheme", "X9.31"), ("micalg_format", "md5")],
)
def test_unknown_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValidationError):
        EncoderProperties.model_validate({name: value})


def test_message_mic_field_defaults_to_none() -> None:
    assert Message(body=b"", message_id="m", send_port="P").mic is None


# -- AES-GCM AuthEnvelopedData (RFC 5083/5084) ----------------------------------------------------


@pytest.mark.parametrize("payload_name", ["text", "empty", "1mib"])
@pytest.mark.parametrize("key_transport", ["RSA-PKCS1v15", "RSA-OAEP"])
@pytest.mark.parametrize("cipher", ["AES128-GCM", "AES256-GCM"])
@pytest.mark.parametrize("signature_type", ["NoSign", "ClearSign", "BlobSign"])
def test_aes_gcm_auth_enveloped_data_decrypts_with_openssl(
    chain_env: ChainEnv, tmp_path: Path, signature_type: str, cipher: str, key_transport: str, payload_name: str
) -> None:
    env = chain_env.base
    payload, content_type = ti.PAYLOADS[payload_name]
    out = ti.encode(
        env,
        payload,
        content_type=content_type,
        signature_type=signature_type,
        enable_encryption=True,
        encryption_algorithm=cipher,
        key_encryption_algorithm=key_transport,
    )
    assert out.entity_content_type == 'application/pkcs7-mime; smime-type=authEnveloped-data; name="smime.p7m"'
    assert out.recipient_thumbprint == env.partner.thumbprint
    if len(payload) >= 32:
        assert payload[:32] not in out.body
    inner = ti.decrypt(env, tmp_path, out.body)
    if signature_type != "NoSign":
        inner, _, _ = ti.verify(env, tmp_path, signature_type, inner)
    assert ti.payload_of(inner, content_type=content_type, cte="base64")[0] == payload
    parsed = _asn1(tmp_path, _der_of(out.body, "BlobSign"))
    bits = cipher[3:6]
    assert "OBJECT            :id-smime-ct-authEnvelopedData" in parsed.splitlines()[1]
    # RFC 5084 §3.2 GCMParameters: a 12-octet nonce, the 16-octet ICV written out (12 is the default).
    params, nonce, icv_len = _after(parsed, f":aes-{bits}-gcm", 3)
    assert params == "SEQUENCE"
    assert nonce.startswith("OCTET STRING") and len(nonce.rsplit(":", 1)[1]) == 24
    assert icv_len == "INTEGER :10"
    assert "pkcs7-envelopedData" not in parsed


@pytest.mark.parametrize("where", ["ciphertext", "tag"])
def test_aes_gcm_refuses_a_changed_byte(chain_env: ChainEnv, tmp_path: Path, where: str) -> None:
    # What GCM adds over CBC: openssl itself refuses a modified ciphertext or tag (no signature needed).
    env = chain_env.base
    out = ti.encode(env, ti.BINARY, enable_encryption=True, encryption_algorithm="AES256-GCM")
    head, _, body = out.body.partition(CRLF + CRLF)
    der = bytearray(base64.b64decode(b"".join(body.split(CRLF))))
    der[-1 if where == "tag" else -100] ^= 0x01
    (tmp_path / "entity.eml").write_bytes(head + CRLF + CRLF + base64.encodebytes(bytes(der)).replace(b"\n", CRLF))
    refused = ti.openssl(
        "cms", "-decrypt", "-binary", "-in", tmp_path / "entity.eml", "-inkey", env.partner_key,
        "-recip", env.partner_pem, "-out", tmp_path / "out", ok=False,
    )  # fmt: skip
    assert refused.returncode != 0
    ti.decrypt(env, tmp_path, out.body)  # the unmodified entity decrypts


def test_gcm_with_legacy_media_types_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        EncoderProperties(enable_encryption=True, encryption_algorithm="AES256-GCM", legacy_media_types=True)
    assert "AuthEnvelopedData" in str(exc.value)
    assert EncoderProperties.model_validate({"encryption_algorithm": "aes128_gcm"}).encryption_algorithm == "AES128-GCM"


# -- compression (RFC 3274) -----------------------------------------------------------------------
# This openssl has no zlib (`openssl cms -uncompress`: "unsupported compression algorithm"), so: openssl
# parses the CompressedData (``-cmsout -print``, asn1parse for where eContent lies), the standard
# library's zlib inflates it, openssl decrypts and verifies every other layer.


def _uncompress(tmp_path: Path, entity: bytes) -> bytes:
    headers, body = ti.parse_entity(entity)
    assert headers["content-type"] == 'application/pkcs7-mime; smime-type=compressed-data; name="smime.p7z"'
    assert headers["content-disposition"] == 'attachment; filename="smime.p7z"'
    der = ti.decode_cte(headers["content-transfer-encoding"], body)
    (tmp_path / "compressed.der").write_bytes(der)
    printed = ti.openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "compressed.der").stdout
    text = printed.decode()
    assert "contentType: id-smime-ct-compressedData (1.2.840.113549.1.9.16.1.9)" in text
    assert re.search(
        r"version: 0\s+compressionAlgorithm:\s+algorithm: zlib compression.*\n\s+parameter: <ABSENT>", text
    )
    assert "eContentType: pkcs7-data" in text
    last = _asn1(tmp_path, der).splitlines()[-1]  # eContent's OCTET STRING is the last element
    match = re.match(r"\s*(\d+):d=5\s+hl=(\d+)\s+l=\s*(\d+)\s+prim: OCTET STRING", last)
    assert match, last
    offset, header, length = map(int, match.groups())
    assert offset + header + length == len(der)
    return zlib.decompress(der[offset + header :])


@pytest.mark.parametrize("payload_name", ["text", "1mib"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
@pytest.mark.parametrize("signature_type", ["NoSign", "ClearSign", "BlobSign"])
@pytest.mark.parametrize("compression", ["before_signing", "after_signing"])
def test_compression_layers_open_in_order(
    chain_env: ChainEnv,
    tmp_path: Path,
    compression: str,
    signature_type: str,
    encrypted: bool,
    payload_name: str,
) -> None:
    env = chain_env.base
    payload, content_type = ti.PAYLOADS[payload_name]
    out = ti.encode(
        env,
        payload,
        content_type=content_type,
        signature_type=signature_type,
        enable_encryption=encrypted,
        compression=compression,
    )
    entity = ti.decrypt(env, tmp_path, out.body) if encrypted else out.body
    if compression == "after_signing" or signature_type == "NoSign":
        entity = _uncompress(tmp_path, entity)
    if signature_type != "NoSign":
        signed, _, _ = ti.verify(env, tmp_path, signature_type, entity)
        # The MIC is over what was signed: the compressed entity when compressing before signing (RFC 5402).
        assert out.mic == base64.b64encode(hashlib.sha256(signed).digest()).decode() + ", sha-256"
        entity = _uncompress(tmp_path, signed) if compression == "before_signing" else signed
    assert ti.payload_of(entity, content_type=content_type, cte="base64")[0] == payload


def test_compression_shrinks_text(chain_env: ChainEnv) -> None:
    env = chain_env.base
    plain = ti.encode(env, ti.TEXT * 200, signature_type="BlobSign")
    packed = ti.encode(env, ti.TEXT * 200, signature_type="BlobSign", compression="after_signing")
    assert len(packed.body) < len(plain.body) / 2


# -- ECDH recipients (RFC 5753) -------------------------------------------------------------------


@pytest.mark.parametrize("payload_name", ["binary", "1mib"])
@pytest.mark.parametrize("cipher", ["AES128", "AES192", "AES256", "AES128-GCM", "AES256-GCM"])
@pytest.mark.parametrize("curve", ["P-256", "P-384"])
def test_ec_recipient_decrypts_with_openssl(
    chain_env: ChainEnv, tmp_path: Path, curve: str, cipher: str, payload_name: str
) -> None:
    env = chain_env.base
    partner, partner_pem, partner_key = chain_env.ec_partners[curve]
    payload, content_type = ti.PAYLOADS[payload_name]
    out = ti.encode(
        env,
        payload,
        content_type=content_type,
        signature_type="ClearSign",
        enable_encryption=True,
        encryption_algorithm=cipher,
        encryption_thumbprint=partner.thumbprint,
    )
    assert out.recipient_thumbprint == partner.thumbprint
    inner = ti.decrypt(env, tmp_path, out.body, key=partner_key, cert=partner_pem)
    content, _, _ = ti.verify(env, tmp_path, "ClearSign", inner)
    assert ti.payload_of(content, content_type=content_type, cte="base64")[0] == payload
    # The partner's RSA key cannot open it: it is for the EC key alone.
    (tmp_path / "entity.eml").write_bytes(out.body)
    refused = ti.openssl(
        "cms", "-decrypt", "-binary", "-in", tmp_path / "entity.eml", "-inkey", env.partner_key,
        "-recip", env.partner_pem, "-out", tmp_path / "nope", ok=False,
    )  # fmt: skip
    assert refused.returncode != 0
    parsed = _asn1(tmp_path, _der_of(out.body, "BlobSign"))
    bits = cipher[3:6]
    # RFC 5652 §6.1: EnvelopedData is version 2 with a kari; AuthEnvelopedData always 0 (RFC 5083).
    assert _after(parsed, "OBJECT            :", 3)[2] == ("INTEGER :00" if "GCM" in cipher else "INTEGER :02")
    # kari [1]: version 3, originator [0] { originatorKey [1] { id-ecPublicKey (no parameters), BIT STRING } }
    assert _after(parsed, "SET", 6) == [
        "cont [ 1 ]", "INTEGER :03", "cont [ 0 ]", "cont [ 1 ]", "SEQUENCE", "OBJECT :id-ecPublicKey",
    ]  # fmt: skip
    assert _after(parsed, ":id-ecPublicKey", 3) == [
        "BIT STRING", "SEQUENCE", "OBJECT :dhSinglePass-stdDH-sha256kdf-scheme",
    ]  # fmt: skip
    assert _after(parsed, ":dhSinglePass-stdDH-sha256kdf-scheme", 2) == ["SEQUENCE", f"OBJECT :id-aes{bits}-wrap"]


def test_ec_recipient_with_rsa_oaep_is_refused(chain_env: ChainEnv) -> None:
    partner = chain_env.ec_partners["P-256"][0]
    with pytest.raises(CertificateError) as exc:
        ti.encode(
            chain_env.base,
            ti.TEXT,
            enable_encryption=True,
            key_encryption_algorithm="RSA-OAEP",
            encryption_thumbprint=partner.thumbprint,
        )
    assert exc.value.code == "algorithm-not-supported"
    assert "ECDH" in exc.value.message and partner.thumbprint in exc.value.message


def test_ec_recipient_on_another_curve_is_refused(chain_env: ChainEnv) -> None:
    with pytest.raises(CertificateError) as exc:
        ti.encode(chain_env.base, ti.TEXT, enable_encryption=True, encryption_thumbprint=chain_env.p521.thumbprint)
    assert exc.value.code == "algorithm-not-supported"
    assert "secp521r1" in exc.value.message and "P-256 or P-384" in exc.value.message
