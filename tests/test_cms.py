"""Our hand-written CMS DER against cryptography's PKCS7 builders: the same bytes where both are deterministic.

- RSA SignedData (PKCS#1 v1.5 is deterministic): byte-identical, at 2 KB and at 60 KiB, 300 KiB and 5 MiB
  (the streaming branch: hashed while it goes out, SignerInfo last; detached: hashed first).
- EC SignedData (ECDSA is randomised): byte-identical up to the signature, which is the last element and
  verifies over the signed attributes with the certificate's key; at 5 MiB this is the path that streams
  the content twice instead of holding it (above 4 MiB).
- EnvelopedData (random content-encryption key and IV, randomised PKCS#1 v1.5 padding): byte-identical to
  the builders' but for the encrypted key, the IV and the ciphertext, and every one is decrypted with
  cryptography's ``pkcs7_decrypt_der`` (the encoder's whole output with ``pkcs7_decrypt_smime``),
  recovering exactly the input.

Each content comes in two shapes: the bare payload (one buffer) and the body part the encoder signs (the
payload base64-encoded in 76-character lines under MIME headers, produced block by block).
"""

from __future__ import annotations

import base64
import datetime as dt
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7
from pki import Issued, TestPKI, build_store

from worker.identity.keys import SigningIdentity
from worker.message import Message
from worker.pipeline.encoder import EncoderProperties, MimeSmimeEncoder
from worker.pipeline.stage import StageContext
from worker.smime import enveloped, recipients, signed
from worker.smime import identifiers as ids
from worker.smime.body import Body

KIB, MIB = 1024, 1024 * 1024
PAYLOAD = b"Content-Type: text/plain\r\n\r\nline\nbinary\x00\r\r\n" * 50
# Above STREAM_ABOVE (57 KiB) and EAGER (256 KiB); 5 MiB is above the EC writer's 4 MiB materialising limit.
SIZES = {"60KiB": 60 * KIB, "300KiB": 300 * KIB, "5MiB": 5 * MIB}
SHAPES = ("payload", "body-part")
DIGESTS = ("SHA256", "SHA384", "SHA512")
_HASHES: dict[str, hashes.SHA256 | hashes.SHA384 | hashes.SHA512] = {
    "SHA256": hashes.SHA256(),
    "SHA384": hashes.SHA384(),
    "SHA512": hashes.SHA512(),
}
_AES: dict[str, type[algorithms.AES128] | type[algorithms.AES256]] = {
    "AES128": algorithms.AES128,
    "AES256": algorithms.AES256,
}
_BODY_PART_HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Transfer-Encoding", "base64")]
_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
_ENVELOPED_DATA = bytes.fromhex("06092a864886f70d010703")
_RETRIES = 60  # draws for a same-second (and, for ECDSA, same-length) pair; ~1-3 are needed


@pytest.fixture(scope="module")
def payloads() -> dict[str, bytes]:
    # Random bytes behind the characters a MIME canonicaliser would rewrite (bare LF and CR, NUL).
    rng = random.Random(5652)
    edge = b"\x00\r\n\r\r\n\n--\x00\rFrom \n.\r\n"
    return {name: (edge + rng.randbytes(size))[:size] for name, size in SIZES.items()}


def _content(payload: bytes, shape: str) -> Body:
    if shape == "payload":
        return Body.of(payload)
    return Body.of(payload).base64().entity(_BODY_PART_HEADERS)  # streamed in 57 KiB blocks


def _signer(issued: Issued) -> signed.Signer:
    return signed.Signer.of(SigningIdentity(issued.cert, issued.key, issued.thumbprint, Path("in-memory")))


def _ours(signer: Issued, digest: str, content: Body, *, with_cert: bool, detached: bool) -> bytes:
    return signed.signed_data(
        _signer(signer), ids.DIGESTS[digest], content, with_cert=with_cert, detached=detached
    ).materialize()


def _builders(signer: Issued, digest: str, data: bytes, *, with_cert: bool, detached: bool) -> bytes:
    options = [pkcs7.PKCS7Options.Binary]
    if not with_cert:
        options.append(pkcs7.PKCS7Options.NoCerts)
    if detached:
        options.append(pkcs7.PKCS7Options.DetachedSignature)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(signer.cert, signer.key, _HASHES[digest])
    return builder.sign(serialization.Encoding.DER, options)


def _second() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp())


def _pair(
    ours: Callable[[], bytes],
    theirs: Callable[[], bytes],
    accept: Callable[[bytes, bytes], bool] = lambda _o, _t: True,
) -> tuple[bytes, bytes]:
    """(ours, theirs) made within one second (signingTime has a one-second resolution) and accepted;
    theirs is drawn again (cheaper than ours when ours is the encoder's whole output) until accepted."""
    for _ in range(_RETRIES):
        second = _second()
        mine = ours()
        for _ in range(8):
            other = theirs()
            if _second() != second:
                break
            if accept(mine, other):
                return mine, other
    pytest.fail(f"no comparable pair in {_RETRIES} draws")


# -- a DER reader just big enough to find the randomised fields ---------------------------------


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the contents, end) of the DER element starting at ``at`` (definite lengths only)."""
    tag, first = der[at], der[at + 1]
    if first < 0x80:
        return tag, at + 2, at + 2 + first
    count = first & 0x7F
    assert 1 <= count <= 4, f"length of length {count} at {at}"
    start = at + 2 + count
    return tag, start, start + int.from_bytes(der[at + 2 : start], "big")


def _children(der: bytes, at: int) -> list[tuple[int, int, int, int]]:
    """(tag, offset, start of the contents, end) of each element inside the constructed element at ``at``."""
    _, position, end = _element(der, at)
    found = []
    while position < end:
        tag, start, stop = _element(der, position)
        found.append((tag, position, start, stop))
        position = stop
    assert position == end, f"children overrun their parent at {at}"
    return found


def _content_info(der: bytes, content_type: bytes) -> list[tuple[int, int, int, int]]:
    """The fields of the SignedData / EnvelopedData inside a ContentInfo, after checking its framing."""
    tag, _, end = _element(der, 0)
    assert tag == 0x30 and end == len(der), "ContentInfo does not span the whole output"
    (oid_tag, oid_at, _, oid_end), (explicit, explicit_at, _, _) = _children(der, 0)
    assert oid_tag == 0x06 and der[oid_at:oid_end] == content_type and explicit == 0xA0
    ((sequence, sequence_at, _, _),) = _children(der, explicit_at)
    assert sequence == 0x30
    return _children(der, sequence_at)


def _signer_info(der: bytes) -> tuple[bytes, int]:
    """SignedData's one SignerInfo: its signed attributes as the SET that is signed, and where the
    signature's octets start (they must be the last bytes of the output)."""
    infos = _content_info(der, _SIGNED_DATA)[-1]
    assert infos[0] == 0x31
    ((_, info_at, _, _),) = _children(der, infos[1])
    *_, (attrs_tag, attrs_at, _, attrs_end), _, (sig_tag, _, sig_start, sig_end) = _children(der, info_at)
    assert attrs_tag == 0xA0 and sig_tag == 0x04 and sig_end == len(der)
    return b"\x31" + der[attrs_at + 1 : attrs_end], sig_start


def _envelope(der: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """EnvelopedData as (everything up to the ciphertext with the encrypted key and the IV zeroed,
    encrypted key, IV, ciphertext)."""
    _, (ri_tag, ri_at, _, _), (_, eci_at, _, _) = _content_info(der, _ENVELOPED_DATA)
    assert ri_tag == 0x31
    ((_, ktri_at, _, _),) = _children(der, ri_at)
    *_, (key_tag, _, key_start, key_end) = _children(der, ktri_at)
    _, (_, algorithm_at, _, _), (ct_tag, _, ct_start, ct_end) = _children(der, eci_at)
    _, (iv_tag, _, iv_start, iv_end) = _children(der, algorithm_at)
    assert key_tag == 0x04 and iv_tag == 0x04 and ct_tag == 0x80 and ct_end == len(der)
    skeleton = bytearray(der[:ct_start])
    skeleton[key_start:key_end] = bytes(key_end - key_start)
    skeleton[iv_start:iv_end] = bytes(iv_end - iv_start)
    return bytes(skeleton), der[key_start:key_end], der[iv_start:iv_end], der[ct_start:]


# -- SignedData ----------------------------------------------------------------------------------


@pytest.mark.parametrize("digest", DIGESTS)
@pytest.mark.parametrize("with_cert", [True, False])
@pytest.mark.parametrize("detached", [True, False])
def test_rsa_signed_data_is_byte_identical_to_the_builders(
    signer_rsa2048: Issued, digest: str, with_cert: bool, detached: bool
) -> None:
    ours, theirs = _pair(
        lambda: _ours(signer_rsa2048, digest, Body.of(PAYLOAD), with_cert=with_cert, detached=detached),
        lambda: _builders(signer_rsa2048, digest, PAYLOAD, with_cert=with_cert, detached=detached),
    )
    assert ours == theirs


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("digest", DIGESTS)
@pytest.mark.parametrize("with_cert", [True, False])
@pytest.mark.parametrize("detached", [False, True])
def test_large_rsa_signed_data_is_byte_identical_to_the_builders(
    signer_rsa2048: Issued,
    payloads: dict[str, bytes],
    size: str,
    shape: str,
    digest: str,
    with_cert: bool,
    detached: bool,
) -> None:
    content = _content(payloads[size], shape)
    data = content.materialize()
    ours, theirs = _pair(
        lambda: _ours(signer_rsa2048, digest, content, with_cert=with_cert, detached=detached),
        lambda: _builders(signer_rsa2048, digest, data, with_cert=with_cert, detached=detached),
    )
    assert len(ours) == len(theirs)
    assert ours == theirs
    if not detached:
        assert data in ours


def _assert_ec_matches(signer: Issued, digest: str, ours: bytes, theirs: bytes) -> None:
    attrs, cut = _signer_info(ours)
    assert _signer_info(theirs)[1] == cut
    assert ours[:cut] == theirs[:cut]  # all of it but the signature, which is last
    public = signer.key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(ours[cut:], attrs, ec.ECDSA(_HASHES[digest]))  # raises InvalidSignature


def test_ec_signed_data_matches_the_builders_up_to_the_signature(signer_ec: Issued) -> None:
    # ECDSA signatures are randomised and their DER length varies (70-72 bytes): draw until both have the
    # same length, then everything before the signature must be equal (structure, certificates, attributes).
    ours, theirs = _pair(
        lambda: _ours(signer_ec, "SHA256", Body.of(PAYLOAD), with_cert=True, detached=False),
        lambda: _builders(signer_ec, "SHA256", PAYLOAD, with_cert=True, detached=False),
        lambda o, t: len(o) == len(t),
    )
    _assert_ec_matches(signer_ec, "SHA256", ours, theirs)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("digest", DIGESTS)
@pytest.mark.parametrize("with_cert", [True, False])
@pytest.mark.parametrize("detached", [False, True])
def test_large_ec_signed_data_matches_the_builders_up_to_the_signature(
    signer_ec: Issued,
    payloads: dict[str, bytes],
    size: str,
    shape: str,
    digest: str,
    with_cert: bool,
    detached: bool,
) -> None:
    content = _content(payloads[size], shape)
    data = content.materialize()
    ours, theirs = _pair(
        lambda: _ours(signer_ec, digest, content, with_cert=with_cert, detached=detached),
        lambda: _builders(signer_ec, digest, data, with_cert=with_cert, detached=detached),
        lambda o, t: len(o) == len(t),
    )
    _assert_ec_matches(signer_ec, digest, ours, theirs)


def test_the_signed_data_oracle_catches_a_changed_byte(signer_rsa2048: Issued, payloads: dict[str, bytes]) -> None:
    # The comparison above is not vacuous: the same content with one byte changed gives other DER.
    data = payloads["300KiB"]
    changed = data[:-1] + bytes((data[-1] ^ 1,))
    ours, theirs = _pair(
        lambda: _ours(signer_rsa2048, "SHA256", Body.of(data), with_cert=True, detached=True),
        lambda: _builders(signer_rsa2048, "SHA256", changed, with_cert=True, detached=True),
    )
    assert len(ours) == len(theirs) and ours != theirs


# -- EnvelopedData -------------------------------------------------------------------------------


def _private(partner: Issued) -> rsa.RSAPrivateKey:
    assert isinstance(partner.key, rsa.RSAPrivateKey)
    return partner.key


def _recipient(partner: Issued) -> recipients.Recipient:
    key = partner.cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    cert = partner.cert
    return recipients.Recipient(
        partner.thumbprint,
        key,
        ids.issuer_and_serial(cert),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )


@pytest.mark.parametrize("size", ["2KB", *SIZES])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cipher", ["AES128", "AES256"])
def test_enveloped_data_matches_the_builders_and_decrypts(
    partner: Issued, payloads: dict[str, bytes], size: str, shape: str, cipher: str
) -> None:
    plain = _content(PAYLOAD if size == "2KB" else payloads[size], shape)
    data = plain.materialize()
    ours = enveloped.enveloped_data((_recipient(partner),), ids.CIPHERS[cipher], plain).materialize()
    theirs = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(data)
        .add_recipient(partner.cert)
        .set_content_encryption_algorithm(_AES[cipher])
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    assert len(ours) == len(theirs)
    skeleton, encrypted_key, iv, _ = _envelope(ours)
    assert skeleton == _envelope(theirs)[0]  # structure, recipient, algorithms, all lengths
    assert len(_private(partner).decrypt(encrypted_key, padding.PKCS1v15())) == ids.CIPHERS[cipher][1] // 8
    assert len(iv) == 16
    assert pkcs7.pkcs7_decrypt_der(ours, partner.cert, _private(partner), []) == data


def test_every_envelope_has_its_own_key_and_iv(partner: Issued) -> None:
    envelopes = [
        _envelope(
            enveloped.enveloped_data((_recipient(partner),), ids.CIPHERS["AES256"], Body.of(PAYLOAD)).materialize()
        )
        for _ in range(4)
    ]
    keys = {_private(partner).decrypt(e[1], padding.PKCS1v15()) for e in envelopes}
    assert len(keys) == 4
    assert len({e[2] for e in envelopes}) == 4
    assert len({e[3] for e in envelopes}) == 4


def test_the_envelope_oracle_catches_a_wrong_plaintext(partner: Issued, payloads: dict[str, bytes]) -> None:
    data = payloads["300KiB"]
    changed = data[:-1] + bytes((data[-1] ^ 1,))
    ours = enveloped.enveloped_data((_recipient(partner),), ids.CIPHERS["AES256"], Body.of(changed)).materialize()
    assert pkcs7.pkcs7_decrypt_der(ours, partner.cert, _private(partner), []) != data


# -- the encoder's whole output ------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoders(
    tmp_path_factory: pytest.TempPathFactory, signer_rsa2048: Issued, signer_ec: Issued, partner: Issued
) -> dict[str, MimeSmimeEncoder]:
    store = build_store(
        tmp_path_factory.mktemp("cms-stores"), "svc-send", personal=[signer_rsa2048, signer_ec], other_people=[partner]
    )
    assert store.problems == ()
    props = EncoderProperties(signature_type="BlobSign", enable_encryption=True, encryption_algorithm="AES256")
    return {
        name: MimeSmimeEncoder(props, StageContext(store, signer.thumbprint, "Port", partner.thumbprint))
        for name, signer in (("rsa2048", signer_rsa2048), ("ec", signer_ec))
    }


def _split(entity: bytes) -> tuple[bytes, bytes]:
    head, sep, body = entity.partition(b"\r\n\r\n")
    assert sep
    return head, body


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("signer_name", ["rsa2048", "ec"])
def test_the_encoders_output_decrypts_to_the_builders_signed_data(
    encoders: dict[str, MimeSmimeEncoder],
    signer_rsa2048: Issued,
    signer_ec: Issued,
    partner: Issued,
    payloads: dict[str, bytes],
    size: str,
    signer_name: str,
) -> None:
    # BlobSign + AES-256, base64: decrypted by cryptography's S/MIME reader; the signed-data inside is the
    # builders' over the body part written here with the standard library (base64 in 76-column CRLF lines).
    signer = {"rsa2048": signer_rsa2048, "ec": signer_ec}[signer_name]
    payload = payloads[size]
    body_part = (
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(payload).replace(b"\n", b"\r\n")
    )

    def ours() -> bytes:
        out = encoders[signer_name].process(Message(body=payload, message_id="m", send_port="Port")).body
        head, signed_b64 = _split(pkcs7.pkcs7_decrypt_smime(out, partner.cert, _private(partner), []))
        assert head == (
            b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="smime.p7m"'
        )
        return base64.b64decode(signed_b64)

    def theirs() -> bytes:
        return _builders(signer, "SHA256", body_part, with_cert=True, detached=False)

    if signer_name == "rsa2048":
        mine, other = _pair(ours, theirs)
        assert mine == other
    else:
        _assert_ec_matches(signer, "SHA256", *_pair(ours, theirs, lambda o, t: len(o) == len(t)))


# -- the signing chain (add_signing_chain) against the builders' add_certificate ----------------------


@pytest.mark.parametrize("detached", [True, False])
def test_signed_data_with_chain_is_byte_identical_to_the_builders(pki: TestPKI, detached: bool) -> None:
    intermediate = pki.intermediate()
    chained = pki.issue("cms chained signer", issuer=intermediate, key_slot="chained")
    signer = signed.Signer.of(
        SigningIdentity(chained.cert, chained.key, chained.thumbprint, Path("in-memory")), (intermediate.cert,)
    )

    def ours() -> bytes:
        body = Body.of(PAYLOAD)
        der = signed.signed_data(
            signer, ids.DIGESTS["SHA256"], body, with_cert=True, detached=detached, with_chain=True
        )
        return der.materialize()

    def theirs() -> bytes:
        options = [pkcs7.PKCS7Options.Binary] + ([pkcs7.PKCS7Options.DetachedSignature] if detached else [])
        builder = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(PAYLOAD)
            .add_signer(chained.cert, chained.key, hashes.SHA256())
            .add_certificate(intermediate.cert)
        )
        return builder.sign(serialization.Encoding.DER, options)

    mine, other = _pair(ours, theirs)
    assert mine == other
    # With the chain switched off (the default) the bytes are the builders' without add_certificate.
    plain = signed.signed_data(signer, ids.DIGESTS["SHA256"], Body.of(PAYLOAD), with_cert=True, detached=detached)
    assert intermediate.cert.public_bytes(serialization.Encoding.DER) not in plain.materialize()


@pytest.mark.parametrize("detached", [True, False])
@pytest.mark.parametrize("digest", DIGESTS)
def test_pss_signed_data_matches_the_builders_up_to_the_signature(
    signer_rsa2048: Issued, digest: str, detached: bool
) -> None:
    # RSASSA-PSS signatures are salted, so not byte-identical: everything before the signature is (the
    # RFC 4056 AlgorithmIdentifier included), and the signature verifies as PSS over the signed attributes.
    hash_algorithm = _HASHES[digest]
    pss = padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size)

    def ours() -> bytes:
        body = Body.of(PAYLOAD)
        der = signed.signed_data(
            _signer(signer_rsa2048), ids.DIGESTS[digest], body, with_cert=True, detached=detached, pss=True
        )
        return der.materialize()

    def theirs() -> bytes:
        options = [pkcs7.PKCS7Options.Binary] + ([pkcs7.PKCS7Options.DetachedSignature] if detached else [])
        builder = pkcs7.PKCS7SignatureBuilder().set_data(PAYLOAD)
        builder = builder.add_signer(signer_rsa2048.cert, signer_rsa2048.key, hash_algorithm, rsa_padding=pss)
        return builder.sign(serialization.Encoding.DER, options)

    mine, other = _pair(ours, theirs)
    attrs, cut = _signer_info(mine)
    assert _signer_info(other)[1] == cut
    assert mine[:cut] == other[:cut]
    public = signer_rsa2048.key.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(mine[cut:], attrs, pss, hash_algorithm)  # raises InvalidSignature
    with pytest.raises(InvalidSignature):
        public.verify(mine[cut:], attrs, padding.PKCS1v15(), hash_algorithm)
