"""The signer's CA path, found in the account's store: for ``add_signing_chain`` and ``sendpipe cert export``."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from worker.identity.store import CertificateStore

_CHAIN_DEPTH = 8  # intermediate CAs followed above the signer at most


def issuers_in(store: CertificateStore) -> list[x509.Certificate]:
    """Every certificate of an account's store that may issue another: the CA certificates bundled with a
    PKCS#12 or PEM in personal/, certificate-only files of personal/, and other-people/."""
    personal = [e.cert for e in store.personal.values()]
    return [*store.chain, *personal, *(e.cert for e in store.other_people.values())]


def intermediates(
    cert: x509.Certificate, candidates: list[x509.Certificate], *, with_root: bool = False
) -> tuple[x509.Certificate, ...]:
    """The CA certificates above ``cert`` found among ``candidates``, nearest first, without the root
    unless ``with_root`` (``sendpipe cert export`` hands the whole path to partners).

    Each link is checked (issuer name and signature); a self-issued certificate is a root and ends the
    chain, not included in signatures (the receiver trusts it already, RFC 5652 §5.1 leaves it to them).
    """
    chain: list[x509.Certificate] = []
    current = cert
    for _ in range(_CHAIN_DEPTH):
        if current.issuer == current.subject:
            break
        issuer = next((c for c in candidates if c.subject == current.issuer and _issued_by(current, c)), None)
        if issuer is None:
            break
        if issuer.subject == issuer.issuer:
            if with_root:
                chain.append(issuer)
            break
        chain.append(issuer)
        current = issuer
    return tuple(chain)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
