"""`sendpipe demo init DIR`: a self-contained demo (CA, group signing cert in two stores, partners, config)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import secrets
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from worker.demo import mailbox
from worker.demo.pki import Pair, empty_crl, leaf, root_ca
from worker.errors import Code, SendpipeError

ACCOUNTS = ("svc-biztalk-a", "svc-biztalk-b")
PARTNERS = {"fabrikam": "Fabrikam, Inc.", "northwind": "Northwind Traders"}
SECRET = "sendpipe_store_password"  # noqa: S105 - a file name: SENDPIPE_STORE_PASSWORD as a /run/secrets file
SIGNING_FILE = "group-signing.pfx"
# In a folder of its own, so a container can mount the folder (not the file) read-only: an edit that replaces
# the file (sed -i, most editors) is then seen inside, where a file bind mount stays on the old inode.
CONFIG_FILE = "config/sendpipe.toml"
_LEGACY_CONFIG = "sendpipe.toml"  # demos written before 0.3 kept it at the top
_PRIVATE = 0o600
_PUBLIC = 0o644


def register(sub: Any) -> None:
    """Add `sendpipe demo init` to the `sendpipe` parser."""
    demo = sub.add_parser(
        "demo",
        help="Write a self-contained demo deployment (demo PKI, two service accounts' stores, config).",
        description="Write a self-contained demo deployment.",
    )
    demo.set_defaults(func=lambda _args: _usage(demo))
    actions = demo.add_subparsers(metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="Write a demo CA, stores, partner certificates and a config into DIR.",
        description="Write into DIR a demo CA, the group signing certificate in the stores of two service "
        "accounts, two partners' certificates, a store password and a config that uses them.",
    )
    init.add_argument("dir", type=Path, metavar="DIR", help="where to write the demo")
    when = init.add_mutually_exclusive_group()
    when.add_argument("--force", action="store_true", help="replace an existing demo in DIR (new keys and password)")
    when.add_argument(
        "--keep-existing",
        action="store_true",
        help="if DIR already holds a demo, keep it and exit 0 (for a one-shot init container)",
    )
    init.add_argument(
        "--shown-as",
        metavar="PATH",
        help="print paths as PATH instead of DIR (a container's /demo is ./demo on the host)",
    )
    init.set_defaults(func=cmd_init)
    mailbox.register(actions)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_init(args: argparse.Namespace) -> int:
    root: Path = args.dir.absolute()
    shown = Path(args.shown_as) if args.shown_as else root
    marker, legacy = root / CONFIG_FILE, root / _LEGACY_CONFIG
    if (marker.exists() or legacy.exists()) and not args.force:
        if args.keep_existing:
            if legacy.exists() and not marker.exists():
                _guarded(root, lambda: _move_legacy_config(root), shown)
                print(f"moved {shown / _LEGACY_CONFIG} to {shown / CONFIG_FILE} (the compose file mounts the folder)")
            print(f"demo already in {shown}; kept it (use --force to replace it)")
            return 0
        raise SendpipeError(
            f"{shown} already holds a demo ({shown / (CONFIG_FILE if marker.exists() else _LEGACY_CONFIG)}); "
            "use --force to replace it",
            code=Code.DEMO_EXISTS,
        )
    written = _guarded(root, lambda: write_demo(root), shown)
    print(f"sendpipe demo written to {shown}:")
    for path, mode in written:
        print(f"  {mode:04o}  {path.relative_to(root)}")
    print(_instructions(shown))
    return 0


T = TypeVar("T")


def _guarded(root: Path, work: Callable[[], T], shown: Path) -> T:
    """An unwritable demo directory (a container user that does not own ./demo) is a coded error, not a traceback."""
    try:
        return work()
    except OSError as exc:
        where = Path(exc.filename) if exc.filename is not None else root
        if where.is_relative_to(root):
            where = shown / where.relative_to(root)  # the path as the user sees it (./demo, not /demo)
        raise SendpipeError(
            f"cannot write the demo: {where}: {exc.strerror or type(exc).__name__} (this process runs as uid "
            f"{os.getuid()}, gid {os.getgid()}; the demo directory must be writable by that user: in containers "
            "`mkdir -p demo` yourself and export SENDPIPE_UID=$(id -u) SENDPIPE_GID=$(id -g), see README)",
            code=Code.OUTPUT_UNWRITABLE,
        ) from None


def _move_legacy_config(root: Path) -> None:
    (root / CONFIG_FILE).parent.mkdir(exist_ok=True)
    (root / _LEGACY_CONFIG).rename(root / CONFIG_FILE)


def write_demo(root: Path) -> list[tuple[Path, int]]:
    """Write the whole demo under ``root``; returns each file written with its mode."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ca = root_ca(now)
    signer = leaf(ca, "Contoso group signing", "signing@contoso.example", now, signing=True)
    partners = {
        name: leaf(ca, f"{org} AS2", f"as2@{name}.example", now, signing=False) for name, org in PARTNERS.items()
    }
    password = secrets.token_urlsafe(24)
    out = _Writer(root)
    out.file("ca/ca.pem", ca.cert_pem(), _PUBLIC)
    out.file("ca/ca.key", ca.key_pem(), _PRIVATE)
    pfx = pkcs12.serialize_key_and_certificates(
        b"Contoso group signing",
        signer.key,
        signer.cert,
        [ca.cert],
        serialization.BestAvailableEncryption(password.encode()),
    )
    crl = empty_crl(ca, now).public_bytes(serialization.Encoding.DER)
    for account in ACCOUNTS:
        store = f"stores/{account}"
        out.file(f"{store}/personal/{SIGNING_FILE}", pfx, _PRIVATE)
        for name, partner in partners.items():
            out.file(f"{store}/other-people/{name}.cer", partner.cert.public_bytes(serialization.Encoding.DER), _PUBLIC)
        out.file(f"{store}/crls/demo-ca.crl", crl, _PUBLIC)
        (root / store).chmod(0o700)  # an account's store is its own, like a Windows user profile
    for name, partner in partners.items():
        # The partners' own keys, only so the demo can decrypt what it sends; never part of a store.
        out.file(f"partners/{name}.key", partner.key_pem(), _PRIVATE)
        out.file(f"partners/{name}.pem", partner.cert_pem(), _PRIVATE)
    out.file(f"secrets/{SECRET}", password.encode(), _PRIVATE)
    with contextlib.suppress(FileNotFoundError):
        (root / _LEGACY_CONFIG).unlink()  # --force over an old demo: one config, in its folder
    out.file(CONFIG_FILE, _config(signer, partners).encode(), _PUBLIC)
    return out.written


class _Writer:
    """Writes files under a root with exact modes (also when replacing a file), never through a symlink."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: list[tuple[Path, int]] = []

    def file(self, rel: str, data: bytes, mode: int) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode == _PRIVATE:
            path.parent.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)  # an existing file keeps its old mode on open(); set it either way
            os.write(fd, data)
        finally:
            os.close(fd)
        self.written.append((path, mode))


def _windows(thumbprint: str) -> str:
    """A thumbprint as the Windows certificate dialog shows it: lower-case byte pairs with spaces."""
    return " ".join(thumbprint[i : i + 2] for i in range(0, len(thumbprint), 2)).lower()


def _config(signer: Pair, partners: dict[str, Pair]) -> str:
    fabrikam, northwind = partners["fabrikam"].thumbprint, partners["northwind"].thumbprint
    colons = ":".join(fabrikam[i : i + 2] for i in range(0, 40, 2))
    enc = 'component = "mime_smime_encoder"'
    return f"""\
# sendpipe demo config, written by `sendpipe demo init` (demo PKI in ca/, stores in stores/).
[group]
name = "Contoso"
# Pasted the Windows way (spaces, lower case): lookups ignore case, spaces, colons and U+200E.
signing_thumbprint = "{_windows(signer.thumbprint)}"  # personal/{SIGNING_FILE} of every account

[pipelines.SignAndEncrypt]
encode = [ {{ {enc}, signature_type = "BlobSign", enable_encryption = true, encryption_algorithm = "AES256" }} ]

# AS2 layout: multipart/signed inside enveloped-data, binary transfer encoding.
[pipelines.AS2]
encode = [ {{ {enc}, signature_type = "ClearSign", enable_encryption = true, encryption_algorithm = "AES128", \
content_transfer_encoding = "binary" }} ]

[pipelines.SignOnly]
encode = [ {{ {enc}, signature_type = "ClearSign" }} ]

[send_ports.FabrikamOrders]
host = "SendHost"
pipeline = "SignAndEncrypt"
encryption_thumbprint = "{colons}"  # other-people/fabrikam.cer
delivery_key = "fabrikam.orders"
retry_count = 3
retry_interval_s = 60

[send_ports.NorthwindInvoices]
host = "SendHost"
pipeline = "AS2"
encryption_thumbprint = "{northwind}"  # other-people/northwind.cer
delivery_key = "northwind.invoices"
retry_count = 3
retry_interval_s = 60

[send_ports.AuditCopy]
host = "AuditHost"
pipeline = "SignOnly"
delivery_key = "audit.copy"
retry_count = 1
retry_interval_s = 30
"""


def _instructions(root: Path) -> str:
    q = shlex.quote
    secret = root / "secrets" / SECRET
    return f"""
Run a host instance of SendHost under service account {ACCOUNTS[0]} (or {ACCOUNTS[1]}; AuditHost likewise):
  export SENDPIPE_CONFIG={q(str(root / CONFIG_FILE))}
  export SENDPIPE_STORE_ROOT={q(str(root / "stores"))}
  export SENDPIPE_SERVICE_ACCOUNT={ACCOUNTS[0]}
  export SENDPIPE_HOST=SendHost
  export SENDPIPE_STORE_PASSWORD="$(cat {q(str(secret))})"
  sendpipe check && sendpipe run
In a container, mount {secret} as /run/secrets/{SECRET} instead of setting SENDPIPE_STORE_PASSWORD.
See what a partner receives:
  echo hello > hello.txt && sendpipe encode --port FabrikamOrders -o hello.eml hello.txt
  openssl cms -decrypt -in hello.eml -inkey {q(str(root / "partners/fabrikam.key"))} \\
    | openssl cms -verify -CAfile {q(str(root / "ca/ca.pem"))}"""
