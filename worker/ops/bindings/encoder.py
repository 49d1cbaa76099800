"""BizTalk's MIME/SMIME encoder properties → sendpipe's `mime_smime_encoder` (README "Migrating from BizTalk")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from worker.config.model import Component
from worker.ops.bindings.parse import PipelineComponent, Prop
from worker.pipeline.catalogue import CATALOGUE

# MIME_SMIME_Encoder.AlgID (BizTalk .NET API reference): DES3=0, DES=1, RC2=2, AES128=3, AES192=4, AES256=5.
ALG_IDS = {0: "DES3", 1: "DES", 2: "RC2", 3: "AES128", 4: "AES192", 5: "AES256"}
LEGACY_CIPHERS = {"DES3", "DES", "RC2"}  # refused by sendpipe (RFC 5751 §2.7, RFC 8551)
# Signature Type in the encoder's order (NoSign, ClearSign, BlobSign) as per-instance data writes it (vt=3).
SIGNATURE_TYPES = {0: "NoSign", 1: "ClearSign", 2: "BlobSign"}
# Content transfer encoding (Base64, QuotedPrintable, SevenBit, EightBit, Binary, UUEncode): the ones sendpipe writes.
_CTE = {"base64": "base64", "quotedprintable": "quoted-printable", "binary": "binary"}
# The encoder's documented defaults ("How to Configure the MIME/SMIME Encoder Pipeline Component"): they apply
# where per-instance data leaves a property out. EncryptionAlgorithm is AES128 since BizTalk 2016 (DES3 before).
DEFAULTS: dict[str, int | str | bool] = {
    "SignatureType": "NoSign",
    "AddSigningCertToMessage": True,
    "EnableEncryption": False,
    "EncryptionAlgorithm": "AES128",
    "ContentTransferEncoding": "base64",
    "ValidateCRL": True,
    "SendBodyPartAsAttachment": False,
}
_ALIASES = {"CheckRevocationList": "ValidateCRL"}  # the property's display name ("Check revocation list")


@dataclass(kw_only=True)
class Findings:
    """What a rule found: ``reasons`` (why not mapped; empty = mapped) and ``notes`` for the operator."""

    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def mapped(self) -> bool:
        return not self.reasons


def _value(props: dict[str, Prop], key: str) -> int | str | bool:
    return props[key].value if key in props else DEFAULTS[key]


def _choice(value: int | str | bool, by_id: Mapping[int, str], what: str, out: Findings) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value in by_id:
        return by_id[value]
    named = {n.upper(): n for n in by_id.values()}
    if isinstance(value, str) and value.strip().upper() in named:
        return named[value.strip().upper()]
    out.reasons.append(f"{what} {value!r} is not one of {', '.join(f'{n}={i}' for i, n in by_id.items())}")
    return None


def _flag(props: dict[str, Prop], key: str, out: Findings) -> bool:
    value = _value(props, key)
    if not isinstance(value, bool):
        out.reasons.append(f"{key} {value!r} is not a boolean (vt=11: -1 or 0)")
        return False
    return value


def map_encoder(comp: PipelineComponent, out: Findings, upgrade_ciphers: bool) -> dict[str, object] | None:
    props: dict[str, Prop] = {}
    for p in comp.properties:
        key = _ALIASES.get(p.name, p.name)
        if key in DEFAULTS or key == "SigningAlgorithm":
            props[key] = p
        else:
            out.reasons.append(f"MIME/SMIME encoder property {p.name} is not one sendpipe knows how to map")
    defaulted = [k for k in DEFAULTS if k not in props and k != "EncryptionAlgorithm"]
    sig = _choice(_value(props, "SignatureType"), SIGNATURE_TYPES, "SignatureType", out)
    encrypt = _flag(props, "EnableEncryption", out)
    add_cert = _flag(props, "AddSigningCertToMessage", out)
    crl = _flag(props, "ValidateCRL", out)
    attach = _flag(props, "SendBodyPartAsAttachment", out)
    cte = _transfer_encoding(_value(props, "ContentTransferEncoding"), out)
    digest = _digest(props.get("SigningAlgorithm"), sig, out)
    if sig is None or cte is None or digest is None or out.reasons:
        return None
    if defaulted:
        out.notes.append(
            f"not in the per-instance data, BizTalk's defaults assumed: {', '.join(defaulted)} "
            "(the pipeline's design-time values may differ: compare with the .btp)"
        )
    result: dict[str, object] = {"component": "mime_smime_encoder", "signature_type": sig}
    if sig != "NoSign":
        result["add_signing_cert_to_message"] = add_cert
        result["signing_algorithm"] = digest
    result["enable_encryption"] = encrypt
    if encrypt:
        result["encryption_algorithm"] = _cipher(_value(props, "EncryptionAlgorithm"), out, upgrade_ciphers)
        if "EncryptionAlgorithm" not in props:
            out.notes.append(
                "EncryptionAlgorithm not in the per-instance data: AES128 assumed (BizTalk 2016 and "
                "later; DES3 before): confirm with the partner"
            )
    elif "EncryptionAlgorithm" in props:
        raw = props["EncryptionAlgorithm"].value
        shown = f"{ALG_IDS[raw]} (AlgID {raw})" if isinstance(raw, int) and raw in ALG_IDS else repr(raw)
        out.notes.append(f"EncryptionAlgorithm {shown} dropped: irrelevant, encryption is off")
    if sig == "ClearSign" and encrypt:
        out.notes.append(
            "ClearSign with encryption (BizTalk's docs disallow it): sendpipe writes the AS2 layout, "
            "multipart/signed inside enveloped-data"
        )
    result["content_transfer_encoding"] = cte
    if sig != "NoSign" or encrypt:
        result["check_revocation_list"] = crl
        if crl:
            source = "BizTalk's default, unlike sendpipe's (false)" if "ValidateCRL" in defaulted else "ValidateCRL"
            out.notes.append(
                f"check_revocation_list = true ({source}): put each issuer's current CRL in every "
                "account's crls/, or messages are suspended revocation-status-unknown"
            )
    result["send_body_part_as_attachment"] = attach
    return result


def _transfer_encoding(value: int | str | bool, out: Findings) -> str | None:
    if isinstance(value, str) and value.strip().lower().replace("-", "") in _CTE:
        return _CTE[value.strip().lower().replace("-", "")]
    why = (
        "numeric values are not mapped (write the name)"
        if isinstance(value, int)
        else ("sendpipe writes base64, quoted-printable or binary only (base64 suggested)")
    )
    out.reasons.append(f"ContentTransferEncoding {value!r}: {why}")
    return None


def _digest(prop: Prop | None, sig: str | None, out: Findings) -> str | None:
    # BizTalk's encoder signs with SHA-1 and does not show it (no property); sendpipe refuses SHA-1.
    value = str(prop.value).upper().replace("-", "") if prop else "SHA1"
    if value in {"SHA256", "SHA384", "SHA512"}:
        return value
    if value != "SHA1":
        out.reasons.append(f"SigningAlgorithm {prop.value if prop else ''!r} is not SHA1, SHA256, SHA384 or SHA512")
        return None
    if sig not in {None, "NoSign"}:
        out.notes.append(
            "BizTalk signed with SHA-1; sendpipe signs with SHA256 (SHA-1 signatures are refused): "
            "the partner's verifier must accept SHA-256"
        )
    return "SHA256"


def _cipher(value: int | str | bool, out: Findings, upgrade_ciphers: bool) -> str:
    """The encryption algorithm; a refused one adds a reason and leaves AES256 in the draft."""
    alg = _choice(value, ALG_IDS, "EncryptionAlgorithm", out)
    if alg is None:
        return "AES256"
    if alg in LEGACY_CIPHERS:
        if upgrade_ciphers:
            out.notes.append(
                f"WARNING: EncryptionAlgorithm {alg} upgraded to AES256 (--upgrade-ciphers): the "
                "partner must decrypt AES-256 before this port goes live"
            )
        else:
            out.reasons.append(
                f"EncryptionAlgorithm {alg} is refused (broken or deprecated, RFC 5751 §2.7, RFC 8551): "
                "AES256 suggested (in the commented-out draft) once the partner can decrypt it, or rerun with "
                "--upgrade-ciphers"
            )
        return "AES256"
    # Whether this build has the cipher is the config models' call (AES192 may come later): ask them.
    try:
        Component.model_validate(
            {"component": "mime_smime_encoder", "enable_encryption": True, "encryption_algorithm": alg},
            context={"catalogue": CATALOGUE},
        )
    except ValidationError as exc:
        out.reasons.append(f"EncryptionAlgorithm {alg}: {messages(exc)}; AES256 suggested (in the commented-out draft)")
        return "AES256"
    return alg


def messages(exc: ValidationError) -> str:
    return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors(include_url=False))


def pipeline_name(stage: tuple[dict[str, object], ...]) -> str:
    """A name that spells the settings (so equal settings share it): e.g. BlobSign_AES256_Binary_NoCert."""
    if not stage:
        return "PassThru"
    p = stage[0]
    parts = [str(p["signature_type"])] if p["signature_type"] != "NoSign" else []
    if p.get("enable_encryption"):
        parts.append(str(p["encryption_algorithm"]))
    if not parts:
        parts.append("MimeOnly")
    if p.get("signing_algorithm", "SHA256") != "SHA256":
        parts.append(str(p["signing_algorithm"]))
    if p["content_transfer_encoding"] != "base64":
        parts.append({"binary": "Binary"}.get(str(p["content_transfer_encoding"]), "QuotedPrintable"))
    if p.get("add_signing_cert_to_message") is False:
        parts.append("NoCert")
    if p.get("check_revocation_list"):
        parts.append("CRL")
    if p.get("send_body_part_as_attachment"):
        parts.append("Attachment")
    return "_".join(parts)
