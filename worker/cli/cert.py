"""`sendpipe cert export [-o FILE]`: the group's signing certificates to hand to partners (SPEC).

The certificate in force now and every scheduled one still to come (``[[group.scheduled_signing]]``),
each as PEM followed by its issuing CAs from this account's store (intermediates and, when the store
holds it, the root: the partner decides what to trust), every CA once. Explanatory lines precede each
PEM block (RFC 7468 §2 allows text outside the encapsulation boundaries). A summary (role, thumbprint,
subject, validity, from-date) goes to stdout with ``-o``, else to stderr while the PEM goes to stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from worker.cli import bootstrap
from worker.errors import CertificateError, Code, SendpipeError
from worker.identity.store import CertificateStore
from worker.pipeline.chain import intermediates, issuers_in


def register(sub: Any) -> None:
    """Add `cert export` to the `sendpipe` parser."""
    cert = sub.add_parser(
        "cert",
        help="The group's signing certificates for partners (cert export).",
        description="Certificates of the group, as partners need them.",
    )
    commands = cert.add_subparsers(metavar="SUBCOMMAND", required=True)
    export = commands.add_parser(
        "export",
        help="Write the current and scheduled signing certificates (PEM, with chain) and a summary.",
        description="Write the group's signing certificate in force now and every scheduled one still to "
        "come, each with its issuing CA certificates from this account's store, as PEM; print a summary "
        "(thumbprint, subject, validity, from-date).",
    )
    export.add_argument("-o", "--output", type=Path, help="PEM file (default: stdout); written only when complete")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    _, _, config, store = bootstrap.load_common(need_host=False)
    now = dt.datetime.now(dt.UTC)
    group = config.group
    in_force = group.signing_at(now)
    entries: list[tuple[str, str, str]] = [(in_force, "current", "in force now")]
    for scheduled in group.scheduled_signing:
        if scheduled.from_ > now and scheduled.thumbprint != in_force:
            entries.append((scheduled.thumbprint, "scheduled", scheduled.from_.isoformat().replace("+00:00", "Z")))
    issuers = issuers_in(store)
    pem: list[bytes] = []
    written: set[bytes] = set()
    rows: list[list[str]] = []
    for thumbprint, role, start in entries:
        cert = _certificate(store, thumbprint)
        validity = f"{_day(cert.not_valid_before_utc)} .. {_day(cert.not_valid_after_utc)}"
        subject = cert.subject.rfc4514_string()
        rows.append([role, thumbprint, subject, validity, start])
        about = f"sendpipe group {group.name!r} signing certificate, {role} ({start})"
        pem.append(_block(cert, [about, f"thumbprint: {thumbprint}", f"subject: {subject}", f"valid: {validity}"]))
        for ca in intermediates(cert, issuers, with_root=True):
            der = ca.public_bytes(serialization.Encoding.DER)
            if der in written:
                continue
            written.add(der)
            kind = "root CA" if ca.subject == ca.issuer else "intermediate CA"
            pem.append(_block(ca, [f"{kind} of the above: {ca.subject.rfc4514_string()}"]))
    data = b"".join(pem)
    report = sys.stdout if args.output else sys.stderr
    _summary(report, rows)
    try:
        if args.output:
            args.output.write_bytes(data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
    except OSError as exc:
        raise SendpipeError(f"cannot write the certificates: {exc.strerror}", code=Code.OUTPUT_UNWRITABLE) from None
    return 0


def _certificate(store: CertificateStore, thumbprint: str) -> x509.Certificate:
    entry = store.personal.get(thumbprint)
    if entry is None:
        raise CertificateError(
            f"signing certificate {thumbprint} is not in the personal store of service account "
            f"{store.account!r} ({store.path / 'personal'})",
            code=Code.SIGNING_CERT_NOT_FOUND,
        )
    return entry.cert


def _block(cert: x509.Certificate, lines: list[str]) -> bytes:
    text = "".join(f"# {line}\n" for line in lines).encode("utf-8")
    return text + cert.public_bytes(serialization.Encoding.PEM) + b"\n"


def _day(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(stream: Any, rows: list[list[str]]) -> None:
    head = ["role", "thumbprint", "subject", "valid", "from"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=stream)
