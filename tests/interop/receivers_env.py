"""The store and files the independent receivers (Bouncy Castle, gpgsm, openssl) test against.

Signers: RSA-2048, EC P-256 and one issued by an intermediate CA (for ``add_signing_chain`` with a root-only
trust anchor). Recipients: two RSA keys and EC P-256 / P-384 keys, so several recipients of mixed kinds
can be tried, each with its own certificate and key file as a partner would hold them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import test_interop as ti
from cryptography.hazmat.primitives.asymmetric import ec
from pki import Issued, TestPKI, write_other_people, write_personal_pem

from worker.identity.store import CertificateStore


@dataclasses.dataclass(frozen=True)
class Party:
    issued: Issued
    pem: Path
    key: Path

    @property
    def thumbprint(self) -> str:
        return self.issued.thumbprint


@dataclasses.dataclass(frozen=True)
class ReceiversEnv:
    base: ti.Env  # for ti.encode / ti.verify: the store, the CA, the signers, "rsa" as the partner
    signers: dict[str, Party]  # rsa2048, ec, chained
    recipients: dict[str, Party]  # rsa (the partner), rsa-b, p256, p384
    intermediate: Issued
    root: Path  # where the files are


def build(root: Path, pki: TestPKI, signer_rsa2048: Issued, signer_ec: Issued, partner: Issued) -> ReceiversEnv:
    stores, files = root / "stores", root / "files"
    intermediate = pki.intermediate()
    chained = pki.issue("sendpipe signer via intermediate", issuer=intermediate, key_slot="chained")
    signers = {"rsa2048": signer_rsa2048, "ec": signer_ec, "chained": chained}
    for name, issued in signers.items():
        write_personal_pem(stores, "svc", name, issued)
    recipients = {
        "rsa": partner,
        "rsa-b": pki.issue("Archive RSA recipient", usage="encrypt", key_slot="partner-b"),
        "p256": pki.issue("EC P-256 recipient", key_type="ec-p256", usage="encrypt", key_slot="partner"),
        "p384": pki.issue("EC P-384 recipient", usage="encrypt", key=ec.generate_private_key(ec.SECP384R1())),
    }
    for name, issued in recipients.items():
        write_other_people(stores, "svc", name, issued)
    write_other_people(stores, "svc", "issuing-ca", intermediate, fmt="pem")
    write_other_people(stores, "svc", "root-ca", pki.ca)
    store = CertificateStore.open(stores, "svc")
    assert store.problems == ()

    def party(name: str, issued: Issued) -> Party:
        return Party(issued, issued.write_cert_pem(files / f"{name}.pem"), issued.write_key_pem(files / f"{name}.key"))

    signer_parties = {name: party(f"signer-{name}", issued) for name, issued in signers.items()}
    recipient_parties = {name: party(name, issued) for name, issued in recipients.items()}
    rsa = recipient_parties["rsa"]
    base = ti.Env(
        store=store,
        ca_pem=pki.ca_pem,
        signers=signers,
        signer_pems={name: p.pem for name, p in signer_parties.items()},
        partner=partner,
        partner_pem=rsa.pem,
        partner_key=rsa.key,
        partner_b=recipients["rsa-b"],
        partner_b_pem=recipient_parties["rsa-b"].pem,
        partner_b_key=recipient_parties["rsa-b"].key,
        partner_ec=recipients["p256"],
    )
    return ReceiversEnv(base, signer_parties, recipient_parties, intermediate, root)
