"""Preflight of one host instance: every certificate it will need, found or not, and for how long."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from worker.config.model import Config
from worker.errors import Code, SendpipeError
from worker.identity.store import CertificateStore
from worker.pipeline.catalogue import needs_of

Level = Literal["ok", "warning", "error"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the preflight table."""

    level: Level
    role: str  # "signing" or "encryption"
    subject: str  # group name or send port
    thumbprint: str
    where: str  # the folder it was looked for in
    status: str  # found / missing / expires in N days / the error code
    detail: str = ""
    code: str | None = None


def preflight(
    config: Config, store: CertificateStore, host: str, *, warn_days: int, now: dt.datetime | None = None
) -> list[Finding]:
    """Check the group signing certificate and each send port's encryption certificate for ``host``.

    The signing certificate is an error when unusable (the instance must not start: BizTalk requires it
    in every host instance's service account store); a port's certificate problem is an error too for
    `check`, but `run` only warns and suspends that port's messages so the others keep flowing.
    """
    at = now or dt.datetime.now(dt.UTC)
    ports = config.ports_of(host)
    needs = {name: needs_of(config, name) for name in ports}
    findings = []
    if any(n.signing for n in needs.values()):
        crl = any(n.signing and n.check_crl for n in needs.values())
        findings.append(
            _look(
                partial(_signing_expiry, store, config.group.signing_thumbprint, crl, at),
                "signing",
                config.group.name,
                config.group.signing_thumbprint,
                str(store.path / "personal"),
                at,
                warn_days,
            )
        )
    for name, port in sorted(ports.items()):
        need = needs[name]
        if not need.encryption or port.encryption_thumbprint is None:
            continue
        thumbprint, crl = port.encryption_thumbprint, need.check_crl
        findings.append(
            _look(
                partial(_recipient_expiry, store, thumbprint, crl, at),
                "encryption",
                name,
                thumbprint,
                str(store.path / "other-people"),
                at,
                warn_days,
            )
        )
    return findings


def _signing_expiry(store: CertificateStore, thumbprint: str, crl: bool, at: dt.datetime) -> dt.datetime:
    return store.signing(thumbprint, check_crl=crl, now=at).cert.not_valid_after_utc


def _recipient_expiry(store: CertificateStore, thumbprint: str, crl: bool, at: dt.datetime) -> dt.datetime:
    return store.recipient(thumbprint, check_crl=crl, now=at).cert.not_valid_after_utc


def _look(
    lookup: Callable[[], dt.datetime],
    role: str,
    subject: str,
    thumbprint: str,
    where: str,
    now: dt.datetime,
    warn_days: int,
) -> Finding:
    try:
        not_after: dt.datetime = lookup()
    except SendpipeError as exc:
        status = "missing" if exc.code.endswith("not-found") else exc.code
        return Finding("error", role, subject, thumbprint, where, status, exc.message, exc.code)
    days = (not_after - now).days
    if days < warn_days:
        return Finding(
            "warning",
            role,
            subject,
            thumbprint,
            where,
            f"expires in {days} days",
            f"not valid after {not_after:%Y-%m-%d}",
            Code.CERT_EXPIRES_SOON,
        )
    return Finding("ok", role, subject, thumbprint, where, f"found, expires in {days} days")


def log_findings(log: Any, findings: list[Finding]) -> None:
    """Warn about each certificate that is not fine: at start, after a reload, and daily."""
    for f in findings:
        if f.level != "ok":
            log.warning(
                "cert.problem" if f.level == "error" else "cert.expiring",
                role=f.role,
                subject=f.subject,
                thumbprint=f.thumbprint,
                store=f.where,
                status=f.status,
                error_code=f.code,
                detail=f.detail,
            )
