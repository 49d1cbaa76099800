"""Interop with GnuPG's gpgsm (2.2.40, Debian 12) where it supports the option.

gpgsm decrypts EnvelopedData with RSA PKCS #1 v1.5 key transport and AES-128/192/256-CBC, and verifies
RSA PKCS #1 v1.5, RSASSA-PSS and ECDSA signatures with the path to a trusted root; each case hands it the
DER layer by layer (it reads CMS, not MIME) and compares the payload byte for byte. What gpgsm 2.2 does
not support is asserted as the refusal it gives, with the reason (README "Partner compatibility"):
RSA-OAEP, AES-GCM (AuthEnvelopedData), ECDH recipients and CompressedData.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_interop as ti
from interop.gpgsm import Gpgsm, status, valid_signer
from interop.receivers_env import ReceiversEnv, build
from pki import Issued, TestPKI

CRLF = b"\r\n"


@pytest.fixture(scope="module")
def renv(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPKI, signer_rsa2048: Issued, signer_ec: Issued, partner: Issued
) -> ReceiversEnv:
    return build(tmp_path_factory.mktemp("gpgsm-env"), pki, signer_rsa2048, signer_ec, partner)


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory, renv: ReceiversEnv, pki: TestPKI) -> Iterator[dict[str, Gpgsm]]:
    """One GNUPGHOME per RSA recipient, holding only that recipient's key (and the trusted root)."""
    root = tmp_path_factory.mktemp("gnupg")
    out = {name: Gpgsm(root / name, pki.ca) for name in ("rsa", "rsa-b")}
    try:
        for name, home in out.items():
            imported = home.import_key(renv.recipients[name].issued)
            assert imported.returncode == 0, imported.stderr.decode()
        yield out
    finally:
        for home in out.values():
            home.close()


@pytest.fixture
def new_home(tmp_path: Path, pki: TestPKI) -> Iterator[Gpgsm]:
    """A GNUPGHOME of the test's own (gpgsm keeps every certificate it has seen), trusting the root."""
    home = Gpgsm(tmp_path / "gnupg", pki.ca)
    yield home
    home.close()


def _der(body: bytes) -> bytes:
    return base64.b64decode(b"".join(body.split(CRLF)), validate=True)


def open_with(home: Gpgsm, entity: bytes) -> tuple[bytes, tuple[str, ...], str | None]:
    """Open every layer with gpgsm: the payload, the layers in order and the verified signer."""
    layers: list[str] = []
    signer = None
    for _ in range(4):
        headers, body = ti.parse_entity(entity)
        content_type = headers["content-type"]
        if "smime-type=enveloped-data" in content_type:
            done, entity = home.decrypt(_der(body))
            assert done.returncode == 0 and "DECRYPTION_OKAY" in status(done), done.stderr.decode()
            layers.append("enveloped-data")
        elif content_type.startswith("multipart/signed"):
            part, sig = ti.split_signed(headers, body)
            done, entity = home.verify(sig, part)
            signer = valid_signer(done)
            assert signer is not None, done.stderr.decode()
            layers.append("multipart/signed")
        elif "smime-type=signed-data" in content_type:
            done, entity = home.verify(_der(body))
            signer = valid_signer(done)
            assert signer is not None, done.stderr.decode()
            layers.append("signed-data")
        else:
            return ti.decode_cte(headers["content-transfer-encoding"], body), tuple(layers), signer
    raise AssertionError(f"too many layers: {layers}")


def encode(renv: ReceiversEnv, payload: bytes, *, signer: str = "rsa2048", **props: Any) -> bytes:
    return ti.encode(renv.base, payload, signer=signer, **props).body


_SIGNED = {"NoSign": (), "ClearSign": ("multipart/signed",), "BlobSign": ("signed-data",)}


@pytest.mark.parametrize("cte", ["base64", "binary"])
@pytest.mark.parametrize("cipher", ["AES128", "AES192", "AES256"])
@pytest.mark.parametrize("signature_type", ["NoSign", "ClearSign", "BlobSign"])
def test_decrypt_and_verify(
    renv: ReceiversEnv, homes: dict[str, Gpgsm], signature_type: str, cipher: str, cte: str
) -> None:
    entity = encode(renv, ti.BINARY, signature_type=signature_type, enable_encryption=True,
                    encryption_algorithm=cipher, content_transfer_encoding=cte)  # fmt: skip
    payload, layers, signer = open_with(homes["rsa"], entity)
    assert payload == ti.BINARY
    assert layers == ("enveloped-data", *_SIGNED[signature_type])
    assert signer == (None if signature_type == "NoSign" else renv.signers["rsa2048"].thumbprint)


@pytest.mark.parametrize("algorithm", ["SHA256", "SHA384", "SHA512"])
@pytest.mark.parametrize("scheme", ["PKCS1v15", "PSS"])
@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_rsa_signatures(
    renv: ReceiversEnv, homes: dict[str, Gpgsm], signature_type: str, scheme: str, algorithm: str
) -> None:
    entity = encode(renv, ti.TEXT, signature_type=signature_type, signing_algorithm=algorithm,
                    rsa_signature_scheme=scheme)  # fmt: skip
    payload, layers, signer = open_with(homes["rsa"], entity)
    assert (payload, layers, signer) == (ti.TEXT, _SIGNED[signature_type], renv.signers["rsa2048"].thumbprint)


@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_ecdsa_signer(renv: ReceiversEnv, homes: dict[str, Gpgsm], signature_type: str) -> None:
    entity = encode(renv, ti.TEXT, signer="ec", signature_type=signature_type, enable_encryption=True)
    payload, layers, signer = open_with(homes["rsa"], entity)
    assert (payload, layers, signer) == (
        ti.TEXT, ("enveloped-data", *_SIGNED[signature_type]), renv.signers["ec"].thumbprint,
    )  # fmt: skip


def test_a_large_payload(renv: ReceiversEnv, homes: dict[str, Gpgsm]) -> None:
    entity = encode(renv, ti.MIB, signature_type="BlobSign", enable_encryption=True, encryption_algorithm="AES256")
    assert open_with(homes["rsa"], entity)[0] == ti.MIB


@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_signing_chain_with_only_the_root_trusted(renv: ReceiversEnv, new_home: Gpgsm, signature_type: str) -> None:
    home = new_home  # its own keybox: an intermediate seen in another test would be found there
    alone = encode(renv, ti.TEXT, signer="chained", signature_type=signature_type)
    headers, body = ti.parse_entity(alone)
    der = ti.split_signed(headers, body)[1] if signature_type == "ClearSign" else _der(body)
    content = ti.split_signed(headers, body)[0] if signature_type == "ClearSign" else None
    done, _ = home.verify(der, content)
    assert valid_signer(done) is None  # no path to the root without the intermediate
    assert "Missing issuer certificate" in done.stderr.decode() and any(
        line.startswith("TRUST_UNDEFINED") for line in status(done)
    )
    chained = encode(renv, ti.TEXT, signer="chained", signature_type=signature_type, add_signing_chain=True)
    payload, _, signer = open_with(home, chained)
    assert (payload, signer) == (ti.TEXT, renv.signers["chained"].thumbprint)


@pytest.mark.parametrize("cipher", ["AES128", "AES256"])
def test_several_recipients_each_decrypts(renv: ReceiversEnv, homes: dict[str, Gpgsm], cipher: str) -> None:
    rsa, rsa_b = renv.recipients["rsa"], renv.recipients["rsa-b"]
    entity = ti.encode(
        renv.base, ti.BINARY, signature_type="ClearSign", enable_encryption=True, encryption_algorithm=cipher,
        encryption_thumbprint=rsa.thumbprint, additional=(rsa_b.thumbprint,),
    ).body  # fmt: skip
    expected = (ti.BINARY, ("enveloped-data", "multipart/signed"), renv.signers["rsa2048"].thumbprint)
    assert open_with(homes["rsa"], entity) == expected  # the partner: the first RecipientInfo is its own
    # The second recipient (a home with its key only): gpgsm tries the RecipientInfos in order, reports
    # the partner's, which it cannot open, then decrypts with its own (DECRYPTION_OKAY, content intact)
    # and exits 2 for the error it met on the way. A gpgsm-based archive must read the status, not the
    # exit code; a partner (first) sees exit 0.
    _, body = ti.parse_entity(entity)
    done, inner = homes["rsa-b"].decrypt(_der(body))
    assert done.returncode == 2 and "DECRYPTION_OKAY" in status(done)
    assert "failed to find the certificate" in done.stderr.decode()
    assert open_with(homes["rsa-b"], inner)[0::2] == (ti.BINARY, expected[2])


def test_a_changed_byte_is_refused(renv: ReceiversEnv, homes: dict[str, Gpgsm]) -> None:
    entity = encode(renv, ti.TEXT, signature_type="ClearSign", content_transfer_encoding="binary")
    headers, body = ti.parse_entity(entity)
    part, sig = ti.split_signed(headers, body)
    done, _ = homes["rsa"].verify(sig, part.replace(b"line two", b"line 2ne"))
    assert valid_signer(done) is None and any(line.startswith("BADSIG") for line in status(done))


# -- what gpgsm 2.2 does not support: asserted as it refuses, so a newer gpgsm that accepts shows up -----


def _decrypt_refused(home: Gpgsm, entity: bytes) -> str:
    _, body = ti.parse_entity(entity)
    done, payload = home.decrypt(_der(body))
    assert done.returncode != 0 and payload == b""
    assert "DECRYPTION_FAILED" in status(done)
    return done.stderr.decode()


def test_rsa_oaep_is_not_supported(renv: ReceiversEnv, homes: dict[str, Gpgsm]) -> None:
    # gpgsm 2.2 knows rsaEncryption (PKCS #1 v1.5) key transport only (RSAES-OAEP came with GnuPG 2.4).
    entity = encode(renv, ti.TEXT, enable_encryption=True, key_encryption_algorithm="RSA-OAEP")
    assert "error getting encrypted session key" in _decrypt_refused(homes["rsa"], entity)


@pytest.mark.parametrize("cipher", ["AES128-GCM", "AES256-GCM"])
def test_aes_gcm_is_not_supported(renv: ReceiversEnv, homes: dict[str, Gpgsm], cipher: str) -> None:
    # libksba 1.6 (gpgsm 2.2) does not parse AuthEnvelopedData's GCMParameters (RFC 5084).
    entity = encode(renv, ti.TEXT, enable_encryption=True, encryption_algorithm=cipher)
    assert "Buffer too short" in _decrypt_refused(homes["rsa"], entity)


def test_ecdh_recipients_are_not_supported(renv: ReceiversEnv, new_home: Gpgsm) -> None:
    # gpgsm 2.2.40 cannot even take an EC private key from PKCS#12: the import dies (SIGSEGV), so no EC
    # (ECDH, RFC 5753) recipient can be tried; the certificate alone imports, the key does not.
    home = new_home
    imported = home.import_key(renv.recipients["p256"].issued)
    assert imported.returncode != 0  # -11: SIGSEGV, after the certificate was imported
    assert "Segmentation fault" in imported.stderr.decode()
    entity = encode(renv, ti.TEXT, enable_encryption=True, encryption_thumbprint=renv.recipients["p256"].thumbprint)
    assert "No secret key" in _decrypt_refused(home, entity)


def test_compressed_data_is_not_supported(renv: ReceiversEnv, homes: dict[str, Gpgsm]) -> None:
    # gpgsm has no command for CompressedData (RFC 3274): libksba reports an unknown CMS object.
    entity = encode(renv, ti.TEXT, signature_type="BlobSign", compression="after_signing")
    _, body = ti.parse_entity(entity)
    done, _ = homes["rsa"].verify(_der(body))
    assert valid_signer(done) is None and "Unknown CMS object" in done.stderr.decode()
