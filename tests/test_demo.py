"""`sendpipe demo init`: the files, their modes, the config and stores they make, and what encode makes of them."""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import os
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from smime_check import unwrap

from worker.cli import main as cli
from worker.demo.mailbox import declare
from worker.errors import BrokerUnavailable
from worker.identity.certs import normalize_thumbprint
from worker.identity.store import CertificateStore
from worker.pipeline.catalogue import load_config

SENDPIPE = str(Path(sys.executable).with_name("sendpipe"))
ACCOUNTS = ("svc-biztalk-a", "svc-biztalk-b")
PORT_PARTNER = {"FabrikamOrders": "fabrikam", "NorthwindInvoices": "northwind", "AuditCopy": None}
PRIVATE = {
    "ca/ca.key",
    "secrets/sendpipe_store_password",
    "partners/fabrikam.key",
    "partners/fabrikam.pem",
    "partners/northwind.key",
    "partners/northwind.pem",
    *(f"stores/{a}/personal/group-signing.pfx" for a in ACCOUNTS),
}
PUBLIC = {
    "ca/ca.pem",
    "config/sendpipe.toml",
    *(f"stores/{a}/{f}" for a in ACCOUNTS for f in ("other-people/fabrikam.cer", "other-people/northwind.cer")),
    *(f"stores/{a}/crls/demo-ca.crl" for a in ACCOUNTS),
}


@dataclass(frozen=True)
class Demo:
    root: Path
    stdout: str

    @property
    def password(self) -> str:
        return (self.root / "secrets/sendpipe_store_password").read_text()

    def env(self, account: str = "svc-biztalk-a", host: str = "SendHost") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENDPIPE_")}
        env.update(
            SENDPIPE_CONFIG=str(self.root / "config/sendpipe.toml"),
            SENDPIPE_STORE_ROOT=str(self.root / "stores"),
            SENDPIPE_SERVICE_ACCOUNT=account,
            SENDPIPE_STORE_PASSWORD=self.password,
            SENDPIPE_HOST=host,
        )
        return env

    def store(self, account: str) -> CertificateStore:
        return CertificateStore.open(self.root / "stores", account, SecretStr(self.password))


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SENDPIPE_")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """One demo written by the real command line, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("demo") / "demo"
    done = subprocess.run(
        [SENDPIPE, "demo", "init", str(root)], env=_clean_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return Demo(root, done.stdout)


def _init_parser() -> argparse.ArgumentParser:
    def child(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found: argparse.ArgumentParser = action.choices[name]
                return found
        raise AssertionError(f"no subcommand {name}")

    return child(child(cli._parser(), "demo"), "init")


def test_help_says_what_it_does_in_one_sentence() -> None:
    description = _init_parser().description or ""
    assert description.endswith(".") and description.count(". ") == 0, description
    assert "DIR" in description


def test_files_exist_with_private_modes(demo: Demo) -> None:
    files = {str(p.relative_to(demo.root)) for p in demo.root.rglob("*") if p.is_file()}
    assert files == PRIVATE | PUBLIC
    for rel in PRIVATE:
        assert stat.S_IMODE((demo.root / rel).stat().st_mode) == 0o600, rel
    for rel in PUBLIC:
        assert stat.S_IMODE((demo.root / rel).stat().st_mode) == 0o644, rel
    for rel in ("ca", "partners", "secrets", *(f"stores/{a}" for a in ACCOUNTS)):
        assert stat.S_IMODE((demo.root / rel).stat().st_mode) == 0o700, rel
    assert len(demo.password) >= 24


def test_partner_keys_never_enter_a_store(demo: Demo) -> None:
    for path in (demo.root / "stores").rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    for account in ACCOUNTS:
        for cer in (demo.root / "stores" / account / "other-people").iterdir():
            x509.load_der_x509_certificate(cer.read_bytes())  # DER, as Windows exports .cer


def test_config_loads_with_a_windows_style_thumbprint(demo: Demo) -> None:
    config = load_config(demo.root / "config/sendpipe.toml")
    signer = demo.store("svc-biztalk-a").signing(config.group.signing_thumbprint)
    assert config.group.name == "Contoso"
    raw = (demo.root / "config/sendpipe.toml").read_text()
    windows = " ".join(signer.thumbprint[i : i + 2] for i in range(0, 40, 2)).lower()
    assert f'signing_thumbprint = "{windows}"' in raw
    assert set(config.pipelines) == {"SignAndEncrypt", "AS2", "SignOnly"}
    ports = {name: (p.host, p.pipeline, p.delivery_key) for name, p in config.send_ports.items()}
    assert ports == {
        "FabrikamOrders": ("SendHost", "SignAndEncrypt", "fabrikam.orders"),
        "NorthwindInvoices": ("SendHost", "AS2", "northwind.invoices"),
        "AuditCopy": ("AuditHost", "SignOnly", "audit.copy"),
    }
    for port in config.send_ports.values():
        assert port.retry_count >= 1 and port.retry_interval_s > 0
        assert f"retry_interval_s = {port.retry_interval_s:g}" in raw
    props = {name: p.encode[0].properties.model_dump() for name, p in config.pipelines.items()}
    assert props["SignAndEncrypt"]["signature_type"] == "BlobSign"
    assert props["SignAndEncrypt"]["encryption_algorithm"] == "AES256"
    assert props["AS2"]["signature_type"] == "ClearSign" and props["AS2"]["enable_encryption"]
    assert props["AS2"]["encryption_algorithm"] == "AES128"
    assert props["AS2"]["content_transfer_encoding"] == "binary"
    assert props["SignOnly"]["signature_type"] == "ClearSign" and not props["SignOnly"]["enable_encryption"]


@pytest.mark.parametrize("account", ACCOUNTS)
def test_each_store_holds_the_signing_key_and_both_partners(demo: Demo, account: str) -> None:
    config = load_config(demo.root / "config/sendpipe.toml")
    store = demo.store(account)
    assert store.problems == ()
    signer = store.signing(config.group.signing_thumbprint, check_crl=True)
    assert isinstance(signer.key, rsa.RSAPrivateKey) and signer.key.key_size == 2048
    for name, partner in PORT_PARTNER.items():
        tp = config.send_ports[name].encryption_thumbprint
        if partner is None:
            assert tp is None
            continue
        assert tp is not None
        recipient = store.recipient(tp, check_crl=True)
        own = x509.load_pem_x509_certificate((demo.root / f"partners/{partner}.pem").read_bytes())
        assert recipient.cert == own


def test_certificates_are_issued_by_the_demo_ca_for_their_roles(demo: Demo) -> None:
    ca = x509.load_pem_x509_certificate((demo.root / "ca/ca.pem").read_bytes())
    signer = demo.store("svc-biztalk-a").signing(
        load_config(demo.root / "config/sendpipe.toml").group.signing_thumbprint
    )
    signer.cert.verify_directly_issued_by(ca)
    ku = signer.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.content_commitment and not ku.key_encipherment
    lifetime = signer.cert.not_valid_after_utc - signer.cert.not_valid_before_utc
    assert dt.timedelta(days=729) < lifetime < dt.timedelta(days=732)
    for partner in ("fabrikam", "northwind"):
        cert = x509.load_pem_x509_certificate((demo.root / f"partners/{partner}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        pku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert pku.key_encipherment and not pku.digital_signature
        key = cert.public_key()
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048


def test_output_names_the_files_and_the_settings_but_not_the_password(demo: Demo) -> None:
    for rel in PRIVATE | PUBLIC:
        assert rel in demo.stdout
    for var in ("SENDPIPE_CONFIG=", "SENDPIPE_STORE_ROOT=", "SENDPIPE_SERVICE_ACCOUNT=", "SENDPIPE_STORE_PASSWORD="):
        assert var in demo.stdout
    assert "/run/secrets/sendpipe_store_password" in demo.stdout
    assert demo.password not in demo.stdout


def test_existing_demo_is_kept_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "demo"
    assert cli.main(["demo", "init", str(root)]) == 0
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    capsys.readouterr()

    assert cli.main(["demo", "init", str(root)]) == 1
    err = capsys.readouterr().err
    assert "demo-exists" in err and "--force" in err
    assert cli.main(["demo", "init", "--keep-existing", str(root)]) == 0
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before

    pfx = root / "stores/svc-biztalk-a/personal/group-signing.pfx"
    pfx.chmod(0o644)  # replacing must also restore the private mode
    assert cli.main(["demo", "init", "--force", str(root)]) == 0
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert set(after) == set(before)
    assert after[root / "secrets/sendpipe_store_password"] != before[root / "secrets/sendpipe_store_password"]
    assert after[root / "ca/ca.key"] != before[root / "ca/ca.key"]
    assert stat.S_IMODE(pfx.stat().st_mode) == 0o600
    load_config(root / "config/sendpipe.toml")


def test_keep_existing_moves_an_old_top_level_config_into_its_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "demo"
    assert cli.main(["demo", "init", str(root)]) == 0
    config = (root / "config/sendpipe.toml").read_bytes()
    (root / "config/sendpipe.toml").rename(root / "sendpipe.toml")  # the layout before 0.3
    (root / "config").rmdir()
    capsys.readouterr()
    assert cli.main(["demo", "init", "--keep-existing", "--shown-as", "./demo", str(root)]) == 0
    out = capsys.readouterr().out
    assert (root / "config/sendpipe.toml").read_bytes() == config and not (root / "sendpipe.toml").exists()
    assert "moved demo/sendpipe.toml to demo/config/sendpipe.toml" in out
    assert cli.main(["demo", "init", "--force", str(root)]) == 0
    assert not (root / "sendpipe.toml").exists()


def test_paths_are_printed_as_the_host_sees_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "init", "--shown-as", "./demo", str(tmp_path / "mnt")]) == 0
    out = capsys.readouterr().out
    assert "sendpipe demo written to demo:" in out and "export SENDPIPE_CONFIG=demo/config/sendpipe.toml" in out
    assert str(tmp_path) not in out


def test_an_unwritable_demo_directory_is_a_coded_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a container user that does not own ./demo (tests may run as root: the refusal is injected).
    root = tmp_path / "demo"

    def denied(path: Any, *args: Any, **kwargs: Any) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(os, "open", denied)
    assert cli.main(["demo", "init", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sendpipe: error [output-unwritable]: cannot write the demo: ")
    assert f"uid {os.getuid()}" in err[0] and "SENDPIPE_UID" in err[0] and str(root) in err[0]
    assert cli.main(["demo", "init", "--shown-as", "./demo", str(root)]) == 1
    shown = capsys.readouterr().err
    assert "cannot write the demo: demo/ca/ca.pem: Permission denied" in shown and str(root) not in shown


@pytest.mark.parametrize(("account", "host"), [("svc-biztalk-a", "SendHost"), ("svc-biztalk-b", "AuditHost")])
def test_check_passes_for_a_demo_host_instance(demo: Demo, account: str, host: str) -> None:
    done = subprocess.run(
        [SENDPIPE, "check"], env=demo.env(account, host), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout.splitlines()[-1]


@pytest.mark.parametrize("port", sorted(PORT_PARTNER))
def test_encode_output_is_opened_by_openssl(demo: Demo, port: str, tmp_path: Path) -> None:
    payload = tmp_path / "order.edi"
    payload.write_bytes(b"ISA*00*~\r\nGS*PO*~\r\n\x00\xff binary tail")
    out = tmp_path / "out.eml"
    done = subprocess.run(
        [SENDPIPE, "encode", "--port", port, "-o", str(out), str(payload)],
        env=demo.env("svc-biztalk-b"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    partner = PORT_PARTNER[port]
    keys = {}
    if partner is not None:
        keys = {"recip_cert": demo.root / f"partners/{partner}.pem", "recip_key": demo.root / f"partners/{partner}.key"}
    result = unwrap(out.read_bytes(), tmp_path / "unwrap", ca_pem=demo.root / "ca/ca.pem", **keys)
    assert result.payload == payload.read_bytes()
    signing = load_config(demo.root / "config/sendpipe.toml").group.signing_thumbprint
    assert result.signer_thumbprint == normalize_thumbprint(signing)
    assert ("enveloped-data" in result.layers) == (partner is not None)


async def test_demo_mailbox_waits_for_a_broker_that_does_not_listen_yet_then_fails_coded() -> None:
    """compose's RabbitMQ health check (`rabbitmq-diagnostics ping`) passes before the AMQP listener is up:
    the mailbox keeps trying for --wait seconds instead of failing the deployment at once."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="cannot connect to the broker"):
        await declare(f"amqp://guest:guest@127.0.0.1:{port}/", wait_s=2.0)
    assert 2.0 <= time.monotonic() - t0 < 10
    t1 = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await declare(f"amqp://guest:guest@127.0.0.1:{port}/")  # no wait: at once
    assert time.monotonic() - t1 < 2
