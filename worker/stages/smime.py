"""BizTalk's MIME/SMIME encoder: wrap the payload in MIME, sign (RFC 5751 §3.4), then encrypt (§3.3)."""

from __future__ import annotations

from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

from worker.errors import CertificateError
from worker.message import H_ENCRYPTION_THUMBPRINT, H_FILENAME, Message
from worker.stages import StageContext, mime

# Refused at config load: broken or deprecated (RFC 5751 §2.7 drops 3DES/RC2 to SHOULD- and MUST NOT
# for 40-bit RC2; RFC 8551 §2.7 makes AES-128-CBC the floor; SHA-1/MD5 signatures are broken).
_LEGACY_CIPHERS = {"DES", "DES3", "3DES", "TRIPLEDES", "RC2", "RC2-40", "RC2-64", "RC2-128"}
_LEGACY_DIGESTS = {"SHA1", "SHA-1", "MD5"}
_CIPHERS: dict[str, type[algorithms.AES128] | type[algorithms.AES256]] = {
    "AES128": algorithms.AES128,
    "AES256": algorithms.AES256,
}
_DIGESTS: dict[str, tuple[type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512], str]] = {
    "SHA256": (hashes.SHA256, "sha-256"),  # micalg names: RFC 5751 §3.4.3.2
    "SHA384": (hashes.SHA384, "sha-384"),
    "SHA512": (hashes.SHA512, "sha-512"),
}
_P7M = 'application/pkcs7-mime; smime-type={}; name="smime.p7m"'
_P7M_DISPOSITION = ("Content-Disposition", 'attachment; filename="smime.p7m"')


class EncoderProperties(BaseModel):
    """The component's properties, named after BizTalk's MIME/SMIME encoder (SPEC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signature_type: Literal["NoSign", "ClearSign", "BlobSign"] = "NoSign"
    add_signing_cert_to_message: bool = True
    enable_encryption: bool = False
    encryption_algorithm: Literal["AES128", "AES256"] = "AES128"
    signing_algorithm: Literal["SHA256", "SHA384", "SHA512"] = "SHA256"
    content_transfer_encoding: Literal["base64", "binary", "quoted-printable"] = "base64"
    check_revocation_list: bool = False
    send_body_part_as_attachment: bool = False

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
        if name == "AES192":
            raise PydanticCustomError(
                "algorithm_not_supported",
                "AES192 is not available in this build (the cryptography library offers AES-128 and AES-256 "
                "enveloping only); use AES256",
            )
        return name if name in _CIPHERS else value

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
        return name if name in _DIGESTS else value


class MimeSmimeEncoder:
    """Encode stage component ``mime_smime_encoder``."""

    name = "mime_smime_encoder"

    def __init__(self, props: EncoderProperties, ctx: StageContext) -> None:
        self.props = props
        self.ctx = ctx
        self._digest, self._micalg = _DIGESTS[props.signing_algorithm]
        self._sign_options = [pkcs7.PKCS7Options.Binary]
        if not props.add_signing_cert_to_message:
            self._sign_options.append(pkcs7.PKCS7Options.NoCerts)

    def process(self, message: Message) -> Message:
        headers, body = self._body_part(message)
        signer = None
        if self.props.signature_type != "NoSign":
            identity = self.ctx.store.signing(
                self.ctx.group_signing_thumbprint, check_crl=self.props.check_revocation_list
            )
            signer = identity.thumbprint
            content = mime.entity(headers, body)
            builder = (
                pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(identity.cert, identity.key, self._digest())
            )
            if self.props.signature_type == "BlobSign":
                der = builder.sign(serialization.Encoding.DER, self._sign_options)
                headers, body = _pkcs7_part("signed-data"), mime.b64_lines(der)
            else:
                headers, body = self._clear_signed(builder, content)
        recipient = None
        if self.props.enable_encryption:
            wanted = message.header_str(H_ENCRYPTION_THUMBPRINT) or self.ctx.encryption_thumbprint
            if wanted is None:
                # Unreachable with a validated config; kept so a bad config can never send in clear.
                raise CertificateError(
                    "no encryption certificate is configured for this send port", code="encryption-cert-not-found"
                )
            cert = self.ctx.store.recipient(wanted, check_crl=self.props.check_revocation_list)
            if not isinstance(cert.cert.public_key(), rsa.RSAPublicKey):
                raise CertificateError(
                    f"encryption certificate {cert.thumbprint} has a non-RSA key; only RSA key transport "
                    "is supported for enveloping",
                    code="algorithm-not-supported",
                )
            der = (
                pkcs7.PKCS7EnvelopeBuilder()
                .set_data(mime.entity(headers, body))
                .add_recipient(cert.cert)
                .set_content_encryption_algorithm(_CIPHERS[self.props.encryption_algorithm])
                .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
            )
            recipient = cert.thumbprint
            headers, body = _pkcs7_part("enveloped-data"), mime.b64_lines(der)
        outer = [("MIME-Version", "1.0"), *headers]
        return message.evolve(
            body=mime.entity(outer, body),
            entity_content_type=headers[0][1],
            signer_thumbprint=signer,
            recipient_thumbprint=recipient,
        )

    def _body_part(self, message: Message) -> tuple[list[tuple[str, str]], bytes]:
        cte = self.props.content_transfer_encoding
        headers = [
            ("Content-Type", mime.checked_content_type(message.content_type)),
            ("Content-Transfer-Encoding", cte),
        ]
        if self.props.send_body_part_as_attachment:
            headers.append(
                ("Content-Disposition", mime.disposition(message.header_str(H_FILENAME) or message.message_id))
            )
        return headers, mime.encode_body(message.body, cte)

    def _clear_signed(self, builder: pkcs7.PKCS7SignatureBuilder, signed: bytes) -> tuple[list[tuple[str, str]], bytes]:
        # RFC 5751 §3.4.3: multipart/signed, the first part signed exactly as it is framed here.
        options = [*self._sign_options, pkcs7.PKCS7Options.DetachedSignature]
        signature = builder.sign(serialization.Encoding.DER, options)
        sig_part = mime.entity(
            [
                ("Content-Type", 'application/pkcs7-signature; name="smime.p7s"'),
                ("Content-Transfer-Encoding", "base64"),
                ("Content-Disposition", 'attachment; filename="smime.p7s"'),
            ],
            mime.b64_lines(signature),
        )
        boundary = mime.boundary_for(signed)
        content_type = (
            f'multipart/signed; protocol="application/pkcs7-signature"; micalg={self._micalg}; boundary="{boundary}"'
        )
        body = mime.multipart(boundary, [signed, sig_part], b"This is an S/MIME signed message\r\n")
        return [("Content-Type", content_type)], body


def _pkcs7_part(smime_type: str) -> list[tuple[str, str]]:
    # Always base64: OpenSSL's SMIME reader (and most AS2 peers) base64-decode pkcs7-mime bodies.
    return [("Content-Type", _P7M.format(smime_type)), ("Content-Transfer-Encoding", "base64"), _P7M_DISPOSITION]
