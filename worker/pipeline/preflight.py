"""Preflight of one host instance: every certificate it will need, found or not, and for how long."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from worker.config.model import Config
from worker.errors import Code, SendpipeError
from worker.identity.store import CertificateStore
from worker.pipeline.catalogue import needs_of

Level = Literal["ok", "info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the preflight table."""

    level: Level
    role: str  # "signing" or "encryption"
    subject: str  # group name or send port
    thumbprint: str
    where: str  # the folder it was looked for in
    status: str  # found / missing / expires in N days / the error code / when it takes over
    detail: str = ""
    code: str | None = None
    takes_over: str | None = None  # ISO 8601 UTC ``from`` of a scheduled certificate


def preflight(
    config: Config, store: CertificateStore, host: str, *, warn_days: int, now: dt.datetime | None = None
) -> list[Finding]:
    """Check the group signing certificate and each send port's encryption certificates for ``host``
    (the partner's, then its ``additional_recipient_thumbprints``).

    The signing certificate is an error when unusable (the instance must not start: BizTalk requires it
    in every host instance's service account store); a port's certificate problem is an error too for
    `check`, but `run` only warns and suspends that port's messages so the others keep flowing.
    Every entry of a schedule is shown: the one in force is checked as above; one still to come is
    looked up as it will be at its ``from`` (missing within ``warn_days`` of it: a warning); earlier
    ones are shown as superseded.
    """
    at = now or dt.datetime.now(dt.UTC)
    ports = config.ports_of(host)
    needs = {name: needs_of(config, name) for name in ports}
    findings = []
    if any(n.signing for n in needs.values()):
        crl = any(n.signing and n.check_crl for n in needs.values())
        group = config.group
        entries = [(group.signing_thumbprint, None), *((e.thumbprint, e.from_) for e in group.scheduled_signing)]
        findings += _schedule(
            entries,
            group.signing_at(at),
            partial(_signing_expiry, store, crl=crl),
            "signing",
            group.name,
            str(store.path / "personal"),
            at,
            warn_days,
        )
    for name, port in sorted(ports.items()):
        need = needs[name]
        if not need.encryption or not port.encrypts_to:
            continue
        where = str(store.path / "other-people")
        lookup = partial(_recipient_expiry, store, crl=need.check_crl)
        # The port's extra recipients are needed by every message, like the partner's certificate in force.
        extras = [f for tp in port.additional_recipient_thumbprints
                  for f in _schedule([(tp, None)], tp, lookup, "encryption", name, where, at, warn_days)]  # fmt: skip
        if port.encryption_certificates is None:
            tp = port.encryption_thumbprint or ""
            findings += _schedule([(tp, None)], tp, lookup, "encryption", name, where, at, warn_days) + extras
            continue
        current = port.encryption_at(at)
        if current is None:
            first = port.encryption_certificates[0]
            findings.append(
                Finding(
                    "error", "encryption", name, "-", where, "no certificate in force",
                    f"the schedule starts at {_iso(first.from_)}: messages before then cannot be encrypted",
                    Code.ENCRYPTION_CERT_NOT_FOUND,
                )
            )  # fmt: skip
        entries = [(e.thumbprint, e.from_) for e in port.encryption_certificates]
        findings += _schedule(entries, current, lookup, "encryption", name, where, at, warn_days) + extras
    return findings


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _schedule(
    entries: list[tuple[str, dt.datetime | None]],
    current: str | None,
    lookup: Callable[[str, dt.datetime], dt.datetime],
    role: str,
    subject: str,
    where: str,
    at: dt.datetime,
    warn_days: int,
) -> list[Finding]:
    """One finding per entry of a schedule (``from`` None: the unscheduled certificate, in force first)."""
    out: list[Finding] = []
    started = [(tp, f) for tp, f in entries if f is None or f <= at]
    in_force = started[-1] if started else None
    for tp, start in entries:
        when = None if start is None else _iso(start)
        if (tp, start) == in_force and tp == current:
            found = _look(partial(lookup, tp, at), role, subject, tp, where, at, warn_days)
            out.append(dataclasses.replace(found, takes_over=when))
        elif start is None or start <= at:
            later = "an entry with a later `from` is in force"
            out.append(Finding("info", role, subject, tp, where, "superseded", later, takes_over=when))
        else:
            out.append(_coming(partial(lookup, tp, start), role, subject, tp, where, start, at, warn_days))
    return out


def _coming(
    lookup: Callable[[], dt.datetime],
    role: str,
    subject: str,
    thumbprint: str,
    where: str,
    start: dt.datetime,
    at: dt.datetime,
    warn_days: int,
) -> Finding:
    """A scheduled certificate still to come, checked as it will be when it takes over."""
    days = (start - at).days
    due = f"takes over {_iso(start)} (in {days} days)"
    try:
        lookup()
    except SendpipeError as exc:
        near = start - at <= dt.timedelta(days=warn_days)
        missing = exc.code.endswith("not-found")
        status = f"{'missing' if missing else exc.code}, {due}"
        return Finding(
            "warning" if near else "info", role, subject, thumbprint, where, status,
            f"at its `from`: {exc.message}", Code.SCHEDULED_CERT_NOT_READY, _iso(start),
        )  # fmt: skip
    return Finding("ok", role, subject, thumbprint, where, f"found, {due}", takes_over=_iso(start))


def _signing_expiry(store: CertificateStore, thumbprint: str, at: dt.datetime, *, crl: bool) -> dt.datetime:
    return store.signing(thumbprint, check_crl=crl, now=at).cert.not_valid_after_utc


def _recipient_expiry(store: CertificateStore, thumbprint: str, at: dt.datetime, *, crl: bool) -> dt.datetime:
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
        if f.level in {"warning", "error"}:
            log.warning(
                "cert.problem"
                if f.level == "error"
                else "cert.scheduled_not_ready"
                if f.code == Code.SCHEDULED_CERT_NOT_READY
                else "cert.expiring",
                role=f.role,
                subject=f.subject,
                thumbprint=f.thumbprint,
                store=f.where,
                status=f.status,
                error_code=f.code,
                detail=f.detail,
                takes_over=f.takes_over,
            )
