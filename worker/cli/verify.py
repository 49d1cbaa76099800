"""`sendpipe verify`: what a receiving partner does with a sendpipe entity (SPEC), with the `openssl` CLI.

Built on worker/demo/partner.py's ``unwrap``, which runs ``openssl cms -decrypt`` (with the partner's
certificate and key) and ``openssl cms -verify`` (against the trusted CA: chain, validity, S/MIME signing
key usage) layer by layer (AuthEnvelopedData, which unwrap does not know, is decrypted here with ``openssl cms
-decrypt`` too; CompressedData is read with ``openssl asn1parse`` and inflated with zlib, since OpenSSL is
often built without zlib), and none of sendpipe's own CMS code: a verdict from an independent
implementation, on our output or on anything a partner sends us. OpenSSL's refusal is mapped to SPEC's
exit codes from the step that failed and its reason.

Exit codes: 0 good; 2 signature or integrity failure (content changed, not signed, malformed); 3 untrusted
or invalid signer (chain, validity, key usage, signer certificate missing); 4 not encrypted for the given
certificate; 1 other errors.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

from cryptography import x509

from worker.demo.partner import OpenSSLFailed, split_entity, unwrap
from worker.errors import Code, SendpipeError, UsageError
from worker.identity.certs import thumbprint_of

# What OpenSSL 3 says, by the verdict it means.
_UNTRUSTED = (
    "certificate verify error",
    "signer certificate not found",
    "unable to get local issuer",
    "self-signed certificate",
    "self signed certificate",
    "certificate has expired",
    "certificate is not yet valid",
    "unsupported certificate purpose",
    "certificate revoked",
)
# With -recip, OpenSSL 3 reports a certificate that matches no RecipientInfo as "Error decrypting CMS
# using private key" (CMS_decrypt_set1_pkey_and_peer) and nothing more; a content that does not decrypt
# under the recipient's key fails later ("Error decrypting CMS structure", "bad decrypt").
_NOT_FOR_US = ("error decrypting cms using private key", "no matching recipient", "no recipient matches")
_MAX_ROUNDS = 4  # compressed-data can sit between the other layers: unwrap again after each
_EXIT = {Code.SIGNATURE_INVALID: 2, Code.SIGNER_UNTRUSTED: 3, Code.NOT_A_RECIPIENT: 4}


def register(sub: Any) -> None:
    """Add `verify` to the `sendpipe` parser."""
    ver = sub.add_parser(
        "verify",
        help="Decrypt and verify an S/MIME entity as the receiving partner does (openssl), write the payload.",
        description="Decrypt (when enveloped) with --cert/--key, verify the signature against --ca (chain, "
        "validity, key usage) with the openssl command line, print the signer's subject and thumbprint and "
        "write the payload. Exit 0 good, 2 signature/integrity failure, 3 untrusted or invalid signer, "
        "4 not encrypted for --cert, 1 other errors.",
    )
    ver.add_argument("--ca", required=True, type=Path, help="trusted CA certificate(s), PEM")
    ver.add_argument(
        "--cert",
        type=Path,
        action="append",
        default=[],
        help="our (the recipient's) certificate, PEM; repeat with --key for several recipients' keys: "
        "the entity is decrypted with whichever pair it is encrypted for",
    )
    ver.add_argument("--key", type=Path, action="append", default=[], help="its private key, PEM (one per --cert)")
    ver.add_argument("-o", "--output", type=Path, help="payload file (default: stdout; the report then goes to stderr)")
    ver.add_argument("file", type=Path, help="the MIME entity as received (headers, blank line, body)")
    ver.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    if len(args.cert) != len(args.key):
        raise UsageError("--cert and --key go together, one --key for each --cert", code=Code.USAGE)
    entity = _read(args.file, "entity")
    for path in (args.ca, *args.cert, *args.key):
        _read(path, "file")
    try:
        found = _unwrap_with_any(entity, args.ca, list(zip(args.cert, args.key, strict=True)))
    except SendpipeError as exc:
        if exc.code not in _EXIT:
            raise
        print(f"sendpipe: error [{exc.code}]: {exc.message}", file=sys.stderr)
        return _EXIT[exc.code]
    payload, subject, thumbprint, layers = found
    report = sys.stdout if args.output else sys.stderr
    print(f"signer: {subject}", file=report)
    print(f"thumbprint: {thumbprint}", file=report)
    print(f"layers: {' > '.join(layers)}", file=report)
    if args.output:
        try:
            args.output.write_bytes(payload)
        except OSError as exc:
            raise SendpipeError(f"cannot write {args.output}: {exc.strerror}", code=Code.OUTPUT_UNWRITABLE) from None
    else:
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
    return 0


def _unwrap_with_any(
    entity: bytes, ca: Path, pairs: list[tuple[Path, Path]]
) -> tuple[bytes, str, str, tuple[str, ...]]:
    """Unwrap with each recipient's certificate and key in turn until one is a recipient of the entity
    (a message for several recipients, e.g. the partner and an archive key: RFC 5652 §6.1)."""
    if not pairs:
        return _unwrap(entity, ca, None, None)
    for cert, key in pairs[:-1]:
        try:
            return _unwrap(entity, ca, cert, key)
        except SendpipeError as exc:
            if exc.code != Code.NOT_A_RECIPIENT:
                raise
    cert, key = pairs[-1]
    try:
        return _unwrap(entity, ca, cert, key)
    except SendpipeError as exc:
        if exc.code == Code.NOT_A_RECIPIENT and len(pairs) > 1:
            many = f"not encrypted for any of the {len(pairs)} given certificates ({exc.message})"
            raise SendpipeError(many, code=Code.NOT_A_RECIPIENT) from None
        raise


def _unwrap(entity: bytes, ca: Path, cert: Path | None, key: Path | None) -> tuple[bytes, str, str, tuple[str, ...]]:
    try:
        headers, _ = split_entity(entity)
    except (OpenSSLFailed, UnicodeDecodeError):
        raise SendpipeError("not a MIME entity (headers, CRLF CRLF, body)", code=Code.SIGNATURE_INVALID) from None
    content_type = headers.get("content-type", "").lower()
    if "enveloped-data" in content_type and cert is None:
        raise UsageError("the entity is encrypted: give --cert and --key of its recipient", code=Code.USAGE)
    with tempfile.TemporaryDirectory(prefix="sendpipe-verify-") as tmp:
        layers: list[str] = []
        signer_pem: Path | None = None
        try:
            for step in range(_MAX_ROUNDS):
                work = Path(tmp) / f"round{step}"
                work.mkdir()
                if "smime-type=authenveloped-data" in _content_type(entity):
                    # AES-GCM (RFC 5083): unwrap knows enveloped-data only; openssl decrypts both alike.
                    if cert is None or key is None:
                        raise UsageError("the entity is encrypted: give --cert and --key of its recipient")
                    entity = _decrypt(entity, work, cert, key)
                    layers.append("authEnveloped-data")
                found = unwrap(entity, work, ca_pem=ca, recip_cert=cert, recip_key=key)
                layers.extend(found.layers)
                if found.signer_thumbprint is not None:
                    signer_pem = sorted(work.glob("signer*.pem"))[-1]
                if "smime-type=compressed-data" not in found.content_type.lower():
                    break
                entity = _inflate(found.payload, work)  # RFC 3274: the entity inside goes round again
                layers.append("compressed-data")
            else:
                raise SendpipeError(f"too many layers: {', '.join(layers)}", code=Code.SIGNATURE_INVALID)
        except OpenSSLFailed as exc:
            raise _verdict(str(exc)) from None
        except (ValueError, UnicodeDecodeError, zlib.error) as exc:  # a multipart that does not parse, bad base64
            raise SendpipeError(f"malformed entity: {exc}", code=Code.SIGNATURE_INVALID) from None
        if signer_pem is None:
            raise SendpipeError(
                f"the entity carries no signature (layers: {', '.join(layers) or 'none'})",
                code=Code.SIGNATURE_INVALID,
            )
        signer = x509.load_pem_x509_certificate(signer_pem.read_bytes())
        return found.payload, signer.subject.rfc4514_string(), thumbprint_of(signer), tuple(layers)


def _content_type(entity: bytes) -> str:
    headers, _ = split_entity(entity)
    return headers.get("content-type", "").lower()


def _inflate(der: bytes, work: Path) -> bytes:
    """The content of a CompressedData (RFC 3274): openssl reads the structure, zlib inflates eContent.

    (``openssl cms -uncompress`` needs an OpenSSL built with zlib, which distributions often are not.)
    """
    src = work / "compressed.der"
    src.write_bytes(der)
    argv = ["openssl", "asn1parse", "-inform", "DER", "-in", str(src)]
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    lines = done.stdout.decode(errors="replace").splitlines()
    if done.returncode != 0 or len(lines) < 2 or ":id-smime-ct-compressedData" not in lines[1]:
        raise OpenSSLFailed("openssl asn1parse failed: not a CMS CompressedData")
    if not any(":zlib compression" in line for line in lines):
        raise SendpipeError("compressed-data with another algorithm than zlib", code=Code.SIGNATURE_INVALID)
    match = re.match(r"\s*(\d+):d=5\s+hl=(\d+)\s+l=\s*(\d+)\s+prim: OCTET STRING", lines[-1])
    if match is None:
        raise ValueError("compressed-data without its eContent")
    offset, header, length = map(int, match.groups())
    return zlib.decompress(der[offset + header : offset + header + length])


def _decrypt(entity: bytes, work: Path, cert: Path, key: Path) -> bytes:
    src, out = work / "auth-enveloped.eml", work / "auth-enveloped.out"
    src.write_bytes(entity)
    argv = ["openssl", "cms", "-decrypt", "-binary", "-in", str(src), "-inkey", str(key), "-recip", str(cert)]
    done = subprocess.run([*argv, "-out", str(out)], capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise OpenSSLFailed(f"openssl cms -decrypt failed: {done.stderr.decode(errors='replace').strip()}")
    return out.read_bytes()


def _verdict(failure: str) -> SendpipeError:
    text = failure.lower()
    reason = failure.split("failed: ", 1)[-1].splitlines()
    detail = next((line for line in reason if "error" in line.lower() or "failure" in line.lower()), failure)
    if "cms -decrypt" in text:
        if any(marker in text for marker in _NOT_FOR_US):
            return SendpipeError(
                f"not encrypted for the given certificate (openssl: {detail.strip()})", code=Code.NOT_A_RECIPIENT
            )
        return SendpipeError(
            f"the encrypted content does not decrypt (openssl: {detail.strip()})", code=Code.SIGNATURE_INVALID
        )
    if any(marker in text for marker in _UNTRUSTED):
        return SendpipeError(
            f"the signer is not trusted or not valid (openssl: {detail.strip()})", code=Code.SIGNER_UNTRUSTED
        )
    return SendpipeError(f"the signature does not verify (openssl: {detail.strip()})", code=Code.SIGNATURE_INVALID)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SendpipeError(f"cannot read {what} {path}: {exc.strerror}", code=Code.FILE_UNREADABLE) from None
