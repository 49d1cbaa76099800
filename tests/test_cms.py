"""Our hand-written CMS DER against cryptography's PKCS7 builders: the same bytes where both are deterministic."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from pki import Issued

from worker.identity.keys import SigningIdentity
from worker.smime import cms
from worker.smime.body import Body

PAYLOAD = b"Content-Type: text/plain\r\n\r\nline\nbinary\x00\r\r\n" * 50


def _ours(signer: Issued, digest: str, *, with_cert: bool, detached: bool) -> bytes:
    identity = SigningIdentity(signer.cert, signer.key, signer.thumbprint, Path("in-memory"))
    body = Body.of(PAYLOAD)
    return cms.signed_data(
        cms.Signer.of(identity), cms.DIGESTS[digest], body, with_cert=with_cert, detached=detached
    ).materialize()


def _builders(signer: Issued, digest: str, *, with_cert: bool, detached: bool) -> bytes:
    algorithm = {"SHA256": hashes.SHA256(), "SHA384": hashes.SHA384(), "SHA512": hashes.SHA512()}[digest]
    options = [pkcs7.PKCS7Options.Binary]
    if not with_cert:
        options.append(pkcs7.PKCS7Options.NoCerts)
    if detached:
        options.append(pkcs7.PKCS7Options.DetachedSignature)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(PAYLOAD).add_signer(signer.cert, signer.key, algorithm)
    return builder.sign(serialization.Encoding.DER, options)


@pytest.mark.parametrize("digest", ["SHA256", "SHA384", "SHA512"])
@pytest.mark.parametrize("with_cert", [True, False])
@pytest.mark.parametrize("detached", [True, False])
def test_rsa_signed_data_is_byte_identical_to_the_builders(
    signer_rsa2048: Issued, digest: str, with_cert: bool, detached: bool
) -> None:
    # RSA PKCS#1 v1.5 is deterministic; only signingTime can differ, so retry across a second boundary.
    for _ in range(3):
        second = int(dt.datetime.now(dt.UTC).timestamp())
        ours = _ours(signer_rsa2048, digest, with_cert=with_cert, detached=detached)
        theirs = _builders(signer_rsa2048, digest, with_cert=with_cert, detached=detached)
        if int(dt.datetime.now(dt.UTC).timestamp()) == second:
            break
    assert ours == theirs


def test_ec_signed_data_matches_the_builders_up_to_the_signature(signer_ec: Issued) -> None:
    # ECDSA signatures are randomised and their DER length varies (70-72 bytes): draw until both have the
    # same length, then everything before the signature must be equal (structure, certificates, attributes).
    marker = b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"  # ecdsa-with-SHA256, just before the signature
    for _ in range(50):
        second = int(dt.datetime.now(dt.UTC).timestamp())
        ours = _ours(signer_ec, "SHA256", with_cert=True, detached=False)
        theirs = _builders(signer_ec, "SHA256", with_cert=True, detached=False)
        if len(ours) == len(theirs) and int(dt.datetime.now(dt.UTC).timestamp()) == second:
            break
    cut = ours.rfind(marker)
    assert len(ours) == len(theirs) and cut > 0
    assert ours[:cut] == theirs[:cut]
