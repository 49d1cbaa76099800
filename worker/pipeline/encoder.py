"""BizTalk's MIME/SMIME encoder: wrap the payload in MIME, sign (RFC 5751 §3.4), then encrypt (§3.3)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Literal

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic_core import PydanticCustomError

from worker.errors import CertificateError, Code
from worker.identity.certs import normalize_thumbprint
from worker.message import H_ENCRYPTION_THUMBPRINT, H_FILENAME, Message
from worker.pipeline.chain import intermediates, issuers_in
from worker.pipeline.stage import StageContext
from worker.smime import mime
from worker.smime.authenveloped import auth_enveloped_data
from worker.smime.body import Body
from worker.smime.compressed import compressed_data
from worker.smime.enveloped import enveloped_data
from worker.smime.identifiers import CIPHERS, CURVES, DIGESTS, GCM_CIPHERS, issuer_and_serial, still_valid
from worker.smime.recipients import Recipient
from worker.smime.signed import Signer, signed_data

# Refused at config load: broken or deprecated (RFC 5751 §2.7 drops 3DES/RC2 to SHOULD- and MUST NOT
# for 40-bit RC2; RFC 8551 §2.7 makes AES-128-CBC the floor; SHA-1/MD5 signatures are broken).
_LEGACY_CIPHERS = {"DES", "DES3", "3DES", "TRIPLEDES", "RC2", "RC2-40", "RC2-64", "RC2-128"}
_LEGACY_DIGESTS = {"SHA1", "SHA-1", "MD5"}
_P7M = 'application/{}pkcs7-mime; smime-type={}; name="smime.p7m"'
_P7M_DISPOSITION = ("Content-Disposition", 'attachment; filename="smime.p7m"')
# RFC 3274 §2: compressed-data travels as application/pkcs7-mime, file name extension .p7z.
_P7Z = 'application/{}pkcs7-mime; smime-type=compressed-data; name="smime.p7z"'
_P7Z_DISPOSITION = ("Content-Disposition", 'attachment; filename="smime.p7z"')
_CIPHER_NAMES = {n.replace("-", ""): n for n in (*CIPHERS, *GCM_CIPHERS)}  # "aes256-gcm" -> "AES256-GCM"


class EncoderProperties(BaseModel):
    """The component's properties, named after BizTalk's MIME/SMIME encoder (SPEC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signature_type: Literal["NoSign", "ClearSign", "BlobSign"] = "NoSign"
    add_signing_cert_to_message: bool = True
    enable_encryption: bool = False
    encryption_algorithm: Literal["AES128", "AES192", "AES256", "AES128-GCM", "AES256-GCM"] = "AES128"
    signing_algorithm: Literal["SHA256", "SHA384", "SHA512"] = "SHA256"
    content_transfer_encoding: Literal["base64", "binary", "quoted-printable"] = "base64"
    check_revocation_list: bool = False
    send_body_part_as_attachment: bool = False
    # S/MIME 4.0 and AS2 (SPEC); the defaults keep the output as it was.
    key_encryption_algorithm: Literal["RSA-PKCS1v15", "RSA-OAEP"] = "RSA-PKCS1v15"
    rsa_signature_scheme: Literal["PKCS1v15", "PSS"] = "PKCS1v15"
    add_signing_chain: bool = False
    micalg_format: Literal["rfc5751", "legacy"] = "rfc5751"
    legacy_media_types: bool = False
    compression: Literal["none", "before_signing", "after_signing"] = "none"

    @field_validator("encryption_algorithm", mode="before")
    @classmethod
    def _cipher(cls, value: object) -> object:
        name = str(value).upper().replace("-", "").replace("_", "")
        if name in {n.replace("-", "") for n in _LEGACY_CIPHERS}:
            raise PydanticCustomError(
                "algorithm_not_supported",
                "{value} is refused: DES, 3DES and RC2 are broken or deprecated (RFC 5751 §2.7, RFC 8551); "
                "use AES256 (or AES128)",
                {"value": value},
            )
        return _CIPHER_NAMES.get(name, value)

    @model_validator(mode="after")
    def _combinations(self) -> EncoderProperties:
        if self.legacy_media_types and self.encryption_algorithm in GCM_CIPHERS:
            raise PydanticCustomError(
                "algorithm_not_supported",
                "legacy_media_types cannot carry {value}: the receivers that need application/x-pkcs7-mime "
                "predate AuthEnvelopedData (RFC 5083); use AES256 with legacy_media_types, or drop it",
                {"value": self.encryption_algorithm},
            )
        return self

    @field_validator("signing_algorithm", mode="before")
    @classmethod
    def _digest(cls, value: object) -> object:
        name = str(value).upper().replace("-", "")
        if name in {n.replace("-", "") for n in _LEGACY_DIGESTS}:
            raise PydanticCustomError(
                "algorithm_not_supported",
                "{value} is refused: SHA-1 and MD5 signatures are forgeable (RFC 8551 §2.1); use SHA256 "
                "(or SHA384, SHA512)",
                {"value": value},
            )
        return name if name in DIGESTS else value


class MimeSmimeEncoder:
    """Encode stage component ``mime_smime_encoder``."""

    name = "mime_smime_encoder"

    def __init__(self, props: EncoderProperties, ctx: StageContext) -> None:
        self.props = props
        self.ctx = ctx
        self._digest = DIGESTS[props.signing_algorithm]
        self._cipher = CIPHERS.get(props.encryption_algorithm)
        self._gcm_bits = GCM_CIPHERS.get(props.encryption_algorithm, 0)
        self._micalg = self._digest.micalg if props.micalg_format == "rfc5751" else self._digest.legacy_micalg
        self._x = "x-" if props.legacy_media_types else ""
        self._pss = props.rsa_signature_scheme == "PSS"
        self._oaep = props.key_encryption_algorithm == "RSA-OAEP"
        # Certificates and their DER pieces, looked up once per store snapshot (the pipeline is
        # rebuilt when the store is reloaded); validity is still checked for every message.
        self._signers: dict[str, Signer] = {}
        self._recipients: dict[str, Recipient] = {}

    def process(self, message: Message) -> Message:
        headers, body = self._body_part(message)
        if self.props.compression == "before_signing":
            headers, body = self._compressed(headers, body)
        signer = None
        # The digest of the exact signed bytes (the messageDigest attribute), known once they are hashed:
        # for a streamed BlobSign body that is while the entity is materialised below.
        digests: list[bytes] = []
        if self.props.signature_type != "NoSign":
            identity = self._signer()
            signer = identity.identity.thumbprint
            with_cert = self.props.add_signing_cert_to_message
            if self.props.signature_type == "BlobSign":
                der = signed_data(
                    identity,
                    self._digest,
                    body.entity(headers),
                    with_cert=with_cert,
                    with_chain=self.props.add_signing_chain,
                    pss=self._pss,
                    on_digest=digests.append,
                )
                headers, body = self._pkcs7_part("signed-data"), der.base64()
            else:
                headers, body = self._clear_signed(
                    identity, body.entity(headers).materialize(), with_cert, digests.append
                )
        if self.props.compression == "after_signing":
            headers, body = self._compressed(headers, body)
        recipient = None
        if self.props.enable_encryption:
            targets = self._targets(message)
            recipient = targets[0].thumbprint
            if self._cipher is not None:
                der = enveloped_data(targets, self._cipher, body.entity(headers), oaep=self._oaep)
                headers, body = self._pkcs7_part("enveloped-data"), der.base64()
            else:
                der = auth_enveloped_data(targets, self._gcm_bits, body.entity(headers), oaep=self._oaep)
                headers, body = self._pkcs7_part("authEnveloped-data"), der.base64()
        outer = [("MIME-Version", "1.0"), *headers]
        entity = body.entity(outer).materialize()
        mic = None
        if signer is not None:
            # RFC 4130 §7.3.1: the MIC an AS2 MDN returns as Received-Content-MIC, "<base64>, <micalg>".
            mic = f"{base64.b64encode(digests[-1]).decode('ascii')}, {self._digest.micalg}"
        return message.evolve(
            body=entity,
            entity_content_type=headers[0][1],
            signer_thumbprint=signer,
            recipient_thumbprint=recipient,
            mic=mic,
        )

    def _signer(self) -> Signer:
        wanted = self.ctx.group_signing_thumbprint
        cached = self._signers.get(wanted)
        if cached is not None and not self.props.check_revocation_list and still_valid(cached):
            return cached
        identity = self.ctx.store.signing(wanted, check_crl=self.props.check_revocation_list)
        chain = intermediates(identity.cert, issuers_in(self.ctx.store)) if self.props.add_signing_chain else ()
        cached = self._signers[wanted] = Signer.of(identity, chain)
        return cached

    def _targets(self, message: Message) -> tuple[Recipient, ...]:
        """The partner (the port's certificate, or the message's override) first, then the port's extra
        recipients in their order: pyas2lib-based partners decrypt only the first RecipientInfo."""
        wanted = message.header_str(H_ENCRYPTION_THUMBPRINT) or self.ctx.encryption_thumbprint
        if wanted is None:
            # Unreachable with a validated config; kept so a bad config can never send in clear.
            raise CertificateError(
                "no encryption certificate is configured for this send port", code=Code.ENCRYPTION_CERT_NOT_FOUND
            )
        partner = self._recipient(normalize_thumbprint(wanted))
        extra = (self._recipient(tp) for tp in self.ctx.additional_recipients if tp != partner.thumbprint)
        return (partner, *extra)

    def _recipient(self, thumbprint: str) -> Recipient:
        cached = self._recipients.get(thumbprint)
        if cached is not None and not self.props.check_revocation_list and still_valid(cached):
            return cached
        found = self.ctx.store.recipient(thumbprint, check_crl=self.props.check_revocation_list)
        key = found.cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in CURVES:
                raise CertificateError(
                    f"encryption certificate {found.thumbprint} has an EC key on {key.curve.name}; "
                    "ECDH recipients must be P-256 or P-384 (RFC 5753, RFC 8551)",
                    code=Code.ALGORITHM_NOT_SUPPORTED,
                )
            if self._oaep:
                raise CertificateError(
                    f"encryption certificate {found.thumbprint} has an EC key: it is written to with ECDH "
                    'key agreement, not key_encryption_algorithm = "RSA-OAEP" (an RSA key transport)',
                    code=Code.ALGORITHM_NOT_SUPPORTED,
                )
        elif not isinstance(key, rsa.RSAPublicKey):
            raise CertificateError(
                f"encryption certificate {found.thumbprint} has a {type(key).__name__.removeprefix('_')} key; "
                "only RSA (key transport) and EC P-256/P-384 (ECDH) recipients are supported",
                code=Code.ALGORITHM_NOT_SUPPORTED,
            )
        cert = found.cert
        cached = Recipient(
            found.thumbprint, key, issuer_and_serial(cert), cert.not_valid_before_utc, cert.not_valid_after_utc
        )
        self._recipients[thumbprint] = cached
        return cached

    def _body_part(self, message: Message) -> tuple[list[tuple[str, str]], Body]:
        cte = self.props.content_transfer_encoding
        headers = [
            ("Content-Type", mime.checked_content_type(message.content_type)),
            ("Content-Transfer-Encoding", cte),
        ]
        if self.props.send_body_part_as_attachment:
            headers.append(
                ("Content-Disposition", mime.disposition(message.header_str(H_FILENAME) or message.message_id))
            )
        payload = message.body
        if cte == "base64":
            return headers, Body.of(payload).base64()
        if cte == "binary":
            return headers, Body.of(payload)
        return headers, Body.of(mime.encode_body(payload, cte))

    def _clear_signed(
        self, signer: Signer, signed: bytes, with_cert: bool, on_digest: Callable[[bytes], None]
    ) -> tuple[list[tuple[str, str]], Body]:
        # RFC 5751 §3.4.3: multipart/signed, the first part signed exactly as it is framed here.
        signature = signed_data(
            signer,
            self._digest,
            Body.of(signed),
            with_cert=with_cert,
            detached=True,
            with_chain=self.props.add_signing_chain,
            pss=self._pss,
            on_digest=on_digest,
        )
        sig_part = mime.entity(
            [
                ("Content-Type", f'application/{self._x}pkcs7-signature; name="smime.p7s"'),
                ("Content-Transfer-Encoding", "base64"),
                ("Content-Disposition", 'attachment; filename="smime.p7s"'),
            ],
            mime.b64_lines(signature.materialize()),
        )
        boundary = mime.boundary_for(signed)
        content_type = (
            f'multipart/signed; protocol="application/{self._x}pkcs7-signature"; micalg={self._micalg}; '
            f'boundary="{boundary}"'
        )
        pieces = mime.multipart_chunks(boundary, [signed, sig_part], b"This is an S/MIME signed message\r\n")
        return [("Content-Type", content_type)], Body.of(*pieces)

    def _compressed(self, headers: list[tuple[str, str]], body: Body) -> tuple[list[tuple[str, str]], Body]:
        der = compressed_data(body.entity(headers))
        content_type = _P7Z.format(self._x)
        return [("Content-Type", content_type), ("Content-Transfer-Encoding", "base64"), _P7Z_DISPOSITION], der.base64()

    def _pkcs7_part(self, smime_type: str) -> list[tuple[str, str]]:
        # Always base64: OpenSSL's SMIME reader (and most AS2 peers) base64-decode pkcs7-mime bodies.
        content_type = _P7M.format(self._x, smime_type)
        return [("Content-Type", content_type), ("Content-Transfer-Encoding", "base64"), _P7M_DISPOSITION]
