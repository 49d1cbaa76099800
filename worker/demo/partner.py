"""What a receiving partner does with our output, with the `openssl` command line (the demo and the tests).

Nothing here uses sendpipe's own crypto: it is the independent check that peers accept what we send.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


@dataclass(frozen=True)
class Unwrapped:
    payload: bytes
    content_type: str  # the payload part's Content-Type
    signer_thumbprint: str | None
    layers: tuple[str, ...]  # e.g. ("enveloped-data", "signed-data")


class OpenSSLFailed(Exception):
    """openssl refused the entity: it would not decrypt or its signature did not verify."""


def split_entity(entity: bytes) -> tuple[dict[str, str], bytes]:
    """Headers (lower-case names) and body of a MIME entity; CRLF line ends as RFC 2045 wants."""
    head, sep, body = entity.partition(b"\r\n\r\n")
    if not sep:
        raise OpenSSLFailed("not a MIME entity: no CRLF CRLF between headers and body")
    headers: dict[str, str] = {}
    for line in head.decode("ascii").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise OpenSSLFailed(f"openssl {' '.join(args[:2])} failed: {done.stderr.decode(errors='replace').strip()}")


def _thumbprint(pem_file: Path) -> str:
    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER), usedforsecurity=False).hexdigest().upper()


def _verify(source: list[str], ca_pem: Path, signer_pem: Path, out: Path, extra: list[str]) -> str:
    """``openssl cms -verify`` against the CA (no canonicalisation); the signer's thumbprint."""
    _openssl("cms", "-verify", "-binary", *source, "-CAfile", str(ca_pem), "-signer", str(signer_pem),
             "-out", str(out), *extra)  # fmt: skip
    return _thumbprint(signer_pem)


def _decode(body: bytes, cte: str) -> bytes:
    if cte == "base64":
        return base64.b64decode(body)
    if cte == "quoted-printable":
        return binascii.a2b_qp(body.replace(b"=\r\n", b""))
    return body


def unwrap(
    entity: bytes,
    work: Path,
    *,
    ca_pem: Path,
    recip_cert: Path | None = None,
    recip_key: Path | None = None,
    certfile: Path | None = None,
) -> Unwrapped:
    """Decrypt (``openssl cms -decrypt``) and verify (``openssl cms -verify`` against the CA) down to the payload."""
    work.mkdir(parents=True, exist_ok=True)
    layers: list[str] = []
    signer: str | None = None
    extra = ["-certfile", str(certfile)] if certfile else []
    for step in range(4):
        headers, body = split_entity(entity)
        ctype = headers.get("content-type", "")
        src = work / f"layer{step}.eml"
        src.write_bytes(entity)
        out = work / f"layer{step}.out"
        if "smime-type=enveloped-data" in ctype:
            if not (recip_cert and recip_key):
                raise OpenSSLFailed("encrypted entity but no recipient key given")
            _openssl(
                "cms",
                "-decrypt",
                "-binary",
                "-in",
                str(src),
                "-inkey",
                str(recip_key),
                "-recip",
                str(recip_cert),
                "-out",
                str(out),
            )
            layers.append("enveloped-data")
        elif "smime-type=signed-data" in ctype:
            signer = _verify(["-in", str(src)], ca_pem, work / f"signer{step}.pem", out, extra)
            layers.append("signed-data")
        elif ctype.startswith("multipart/signed"):
            match = re.search(r'boundary="?([^";]+)"?', ctype)
            if not match:
                raise OpenSSLFailed(f"multipart/signed without a boundary: {ctype}")
            delim = b"--" + match.group(1).encode()
            # RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter.
            first = body.index(delim + b"\r\n") + len(delim) + 2
            end = body.index(b"\r\n" + delim, first)
            content = body[first:end]
            rest = body[end + 2 + len(delim) + 2 :]
            sig_end = rest.index(b"\r\n" + delim + b"--")
            _, sig_body = split_entity(rest[:sig_end])
            (work / f"sig{step}.der").write_bytes(base64.b64decode(sig_body))
            (work / f"content{step}").write_bytes(content)
            source = ["-inform", "DER", "-in", str(work / f"sig{step}.der"), "-content", str(work / f"content{step}")]
            signer = _verify(source, ca_pem, work / f"signer{step}.pem", out, extra)
            out.write_bytes(content)
            layers.append("multipart/signed")
        else:
            payload = _decode(body, headers.get("content-transfer-encoding", "7bit").lower())
            return Unwrapped(payload, ctype, signer, tuple(layers))
        entity = out.read_bytes()
    raise OpenSSLFailed(f"too many layers: {layers}")
