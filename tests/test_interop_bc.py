"""Interop with Bouncy Castle, the Java stack under most commercial AS2 servers (bcmail + javax.mail).

Every case encodes a payload with the encoder, hands the entity as it goes on the wire to one long-lived
JVM (tests/interop/BcReceiver.java, compiled by the session fixture), which parses the MIME with
javax.mail, opens each layer with bcmail/bcpkix (SMIMEEnveloped, CMSAuthEnvelopedData, SMIMESigned,
SMIMECompressed), decrypts with the recipient's key, verifies the signature and the signer's path with
PKIX against the root alone, and writes the payload: compared here byte for byte, with the layers it
opened in order and the signer it verified. Negative controls prove the receiver can refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import test_interop as ti
from interop.bc import BcReceiver, Received
from interop.receivers_env import ReceiversEnv, build
from pki import Issued, TestPKI

PAYLOADS = {"text": (ti.TEXT, "text/plain; charset=utf-8"), "binary": (ti.BINARY, "application/octet-stream")}


@pytest.fixture(scope="session")
def bc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BcReceiver]:
    receiver = BcReceiver(tmp_path_factory.mktemp("bc"))
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def renv(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPKI, signer_rsa2048: Issued, signer_ec: Issued, partner: Issued
) -> ReceiversEnv:
    return build(tmp_path_factory.mktemp("bc-env"), pki, signer_rsa2048, signer_ec, partner)


def send(
    renv: ReceiversEnv,
    bc: BcReceiver,
    payload: bytes,
    *,
    to: tuple[str, ...] = ("rsa",),
    key_of: str | None = None,
    signer: str = "rsa2048",
    content_type: str = "application/octet-stream",
    **props: Any,
) -> Received:
    """Encode for the recipients ``to`` (the first is the partner) and let Bouncy Castle open it with
    ``key_of``'s certificate and key (default: the partner's)."""
    first, *others = (renv.recipients[n].thumbprint for n in to)
    out = ti.encode(
        renv.base, payload, signer=signer, content_type=content_type,
        encryption_thumbprint=first, additional=tuple(others), **props,
    )  # fmt: skip
    party = renv.recipients[key_of or to[0]]
    return bc.receive(out.body, trust=renv.base.ca_pem, recipients=((party.pem, party.key),))


def opened(result: Received, payload: bytes, layers: tuple[str, ...], signer: str | None = None) -> None:
    assert result.ok, result.error
    assert result.layers == layers
    assert result.payload == payload
    assert result.signer == signer


_SIGNED_LAYER = {"NoSign": (), "ClearSign": ("multipart/signed",), "BlobSign": ("signed-data",)}


# -- the layouts BizTalk has ---------------------------------------------------------------------


@pytest.mark.parametrize("payload_name", list(PAYLOADS))
@pytest.mark.parametrize("cte", ["base64", "binary", "quoted-printable"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
@pytest.mark.parametrize("signature_type", ["NoSign", "ClearSign", "BlobSign"])
def test_default_layouts(
    renv: ReceiversEnv, bc: BcReceiver, signature_type: str, encrypted: bool, cte: str, payload_name: str
) -> None:
    payload, content_type = PAYLOADS[payload_name]
    result = send(
        renv, bc, payload, content_type=content_type, signature_type=signature_type,
        enable_encryption=encrypted, content_transfer_encoding=cte,
    )  # fmt: skip
    layers = ("enveloped-data",) * encrypted + _SIGNED_LAYER[signature_type]
    signer = None if signature_type == "NoSign" else renv.signers["rsa2048"].thumbprint
    opened(result, payload, layers, signer)


def test_a_large_payload_streams_through(renv: ReceiversEnv, bc: BcReceiver) -> None:
    result = send(renv, bc, ti.MIB, signature_type="BlobSign", enable_encryption=True, encryption_algorithm="AES256")
    opened(result, ti.MIB, ("enveloped-data", "signed-data"), renv.signers["rsa2048"].thumbprint)


# -- ciphers and key transport -------------------------------------------------------------------

_ENVELOPE = {"AES128": "enveloped-data", "AES192": "enveloped-data", "AES256": "enveloped-data"}


@pytest.mark.parametrize("key_transport", ["RSA-PKCS1v15", "RSA-OAEP"])
@pytest.mark.parametrize("cipher", ["AES128", "AES192", "AES256", "AES128-GCM", "AES256-GCM"])
def test_ciphers_and_rsa_key_transport(renv: ReceiversEnv, bc: BcReceiver, cipher: str, key_transport: str) -> None:
    result = send(
        renv, bc, ti.BINARY, signature_type="ClearSign", enable_encryption=True,
        encryption_algorithm=cipher, key_encryption_algorithm=key_transport,
    )  # fmt: skip
    envelope = _ENVELOPE.get(cipher, "authEnveloped-data")
    opened(result, ti.BINARY, (envelope, "multipart/signed"), renv.signers["rsa2048"].thumbprint)


@pytest.mark.parametrize("cipher", ["AES128", "AES192", "AES256"])
@pytest.mark.parametrize("curve", ["p256", "p384"])
def test_ecdh_recipients(renv: ReceiversEnv, bc: BcReceiver, curve: str, cipher: str) -> None:
    result = send(renv, bc, ti.BINARY, to=(curve,), signature_type="BlobSign", enable_encryption=True,
                  encryption_algorithm=cipher)  # fmt: skip
    opened(result, ti.BINARY, ("enveloped-data", "signed-data"), renv.signers["rsa2048"].thumbprint)


@pytest.mark.parametrize("cipher", ["AES128-GCM", "AES256-GCM"])
@pytest.mark.parametrize("curve", ["p256", "p384"])
def test_ecdh_recipients_with_gcm(renv: ReceiversEnv, bc: BcReceiver, curve: str, cipher: str) -> None:
    result = send(renv, bc, ti.BINARY, to=(curve,), signature_type="BlobSign", enable_encryption=True,
                  encryption_algorithm=cipher)  # fmt: skip
    opened(result, ti.BINARY, ("authEnveloped-data", "signed-data"), renv.signers["rsa2048"].thumbprint)


# -- signatures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA256", "SHA384", "SHA512"])
@pytest.mark.parametrize("scheme", ["PKCS1v15", "PSS"])
@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_rsa_signatures(renv: ReceiversEnv, bc: BcReceiver, signature_type: str, scheme: str, algorithm: str) -> None:
    result = send(renv, bc, ti.TEXT, signature_type=signature_type, signing_algorithm=algorithm,
                  rsa_signature_scheme=scheme)  # fmt: skip
    opened(result, ti.TEXT, _SIGNED_LAYER[signature_type], renv.signers["rsa2048"].thumbprint)


@pytest.mark.parametrize("algorithm", ["SHA256", "SHA384", "SHA512"])
@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_ecdsa_signers(renv: ReceiversEnv, bc: BcReceiver, signature_type: str, algorithm: str) -> None:
    result = send(renv, bc, ti.BINARY, signer="ec", signature_type=signature_type, signing_algorithm=algorithm,
                  enable_encryption=True)  # fmt: skip
    opened(result, ti.BINARY, ("enveloped-data", *_SIGNED_LAYER[signature_type]), renv.signers["ec"].thumbprint)


@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_signing_chain_with_a_root_only_trust_anchor(renv: ReceiversEnv, bc: BcReceiver, signature_type: str) -> None:
    chained = renv.signers["chained"].thumbprint
    with_chain = send(renv, bc, ti.TEXT, signer="chained", signature_type=signature_type, add_signing_chain=True)
    opened(with_chain, ti.TEXT, _SIGNED_LAYER[signature_type], chained)
    # The control: without the intermediate in the signature, PKIX finds no path to the root.
    alone = send(renv, bc, ti.TEXT, signer="chained", signature_type=signature_type)
    assert not alone.ok
    assert "CertPathBuilderException" in alone.error, alone.error


@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_without_the_signing_certificate_the_partner_supplies_it(
    renv: ReceiversEnv, bc: BcReceiver, signature_type: str
) -> None:
    out = ti.encode(renv.base, ti.TEXT, signature_type=signature_type, add_signing_cert_to_message=False)
    refused = bc.receive(out.body, trust=renv.base.ca_pem)
    assert not refused.ok and "signer certificate not found" in refused.error
    result = bc.receive(out.body, trust=renv.base.ca_pem, signer=renv.signers["rsa2048"].pem)
    opened(result, ti.TEXT, _SIGNED_LAYER[signature_type], renv.signers["rsa2048"].thumbprint)


# -- compression, spellings ----------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
@pytest.mark.parametrize("signature_type", ["NoSign", "ClearSign", "BlobSign"])
@pytest.mark.parametrize("compression", ["before_signing", "after_signing"])
def test_compression(
    renv: ReceiversEnv, bc: BcReceiver, compression: str, signature_type: str, encrypted: bool
) -> None:
    result = send(renv, bc, ti.MIB, signature_type=signature_type, enable_encryption=encrypted,
                  compression=compression)  # fmt: skip
    signed = _SIGNED_LAYER[signature_type]
    inner = (*signed, "compressed-data") if compression == "before_signing" else ("compressed-data", *signed)
    signer = None if signature_type == "NoSign" else renv.signers["rsa2048"].thumbprint
    opened(result, ti.MIB, ("enveloped-data",) * encrypted + inner, signer)


@pytest.mark.parametrize("micalg_format", ["rfc5751", "legacy"])
@pytest.mark.parametrize("legacy_media_types", [False, True], ids=["pkcs7", "x-pkcs7"])
@pytest.mark.parametrize("signature_type", ["ClearSign", "BlobSign"])
def test_legacy_media_types_and_micalg(
    renv: ReceiversEnv, bc: BcReceiver, signature_type: str, legacy_media_types: bool, micalg_format: str
) -> None:
    result = send(renv, bc, ti.BINARY, signature_type=signature_type, enable_encryption=True,
                  legacy_media_types=legacy_media_types, micalg_format=micalg_format,
                  encryption_algorithm="AES256")  # fmt: skip
    opened(result, ti.BINARY, ("enveloped-data", *_SIGNED_LAYER[signature_type]), renv.signers["rsa2048"].thumbprint)


# -- several recipients --------------------------------------------------------------------------

_SETS = {
    "rsa+rsa-b/OAEP": (("rsa", "rsa-b"), "RSA-OAEP"),
    "rsa+p256+p384": (("rsa", "p256", "p384"), "RSA-PKCS1v15"),
    "p384+rsa-b+p256": (("p384", "rsa-b", "p256"), "RSA-PKCS1v15"),
}


@pytest.mark.parametrize("cipher", ["AES256", "AES256-GCM"])
@pytest.mark.parametrize("recipients", list(_SETS))
def test_several_recipients_each_decrypts(renv: ReceiversEnv, bc: BcReceiver, recipients: str, cipher: str) -> None:
    names, key_transport = _SETS[recipients]
    envelope = "authEnveloped-data" if "GCM" in cipher else "enveloped-data"
    for position, name in enumerate(names):
        result = send(renv, bc, ti.BINARY, to=names, key_of=name, signature_type="ClearSign", enable_encryption=True,
                      encryption_algorithm=cipher, key_encryption_algorithm=key_transport)  # fmt: skip
        opened(result, ti.BINARY, (envelope, "multipart/signed"), renv.signers["rsa2048"].thumbprint)
        assert result.recipient_index == position  # the partner's RecipientInfo first, then in order


# -- the receiver refuses what it must -----------------------------------------------------------


def test_a_changed_byte_is_refused(renv: ReceiversEnv, bc: BcReceiver) -> None:
    out = ti.encode(renv.base, ti.TEXT, signature_type="ClearSign", content_transfer_encoding="binary")
    tampered = out.body.replace(b"line two", b"line 2ne")
    assert tampered != out.body
    result = bc.receive(tampered, trust=renv.base.ca_pem)
    assert not result.ok and "message-digest attribute value does not match" in result.error


def test_a_stranger_cannot_decrypt(renv: ReceiversEnv, bc: BcReceiver) -> None:
    result = send(renv, bc, ti.TEXT, to=("rsa", "p256"), key_of="p384", enable_encryption=True)
    assert not result.ok and "no RecipientInfo for the given certificates (2 present)" in result.error


def test_an_untrusted_root_is_refused(renv: ReceiversEnv, bc: BcReceiver) -> None:
    out = ti.encode(renv.base, ti.TEXT, signature_type="BlobSign")
    result = bc.receive(out.body, trust=renv.recipients["rsa"].pem)  # not a CA of the signer
    assert not result.ok and "CertPathBuilderException" in result.error
