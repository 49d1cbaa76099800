"""What both benches share: a throw-away PKI and deployment, /proc readers, statistics and the table."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path

import cryptography
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from worker.identity.certs import thumbprint_of

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
ACCOUNT = "svc-bench"
HOST = "BenchHost"
PORT = "Bench"  # BlobSign + AES-256, base64: the issue's configuration
OFF_PORT = "BenchPass"  # a pipeline with an empty encode stage: the worker with the encoder off
KIB, MIB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Pair:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def thumbprint(self) -> str:
        return thumbprint_of(self.cert)

    def write(self, cert_path: Path, key_path: Path | None = None) -> None:
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        pem = self.cert.public_bytes(serialization.Encoding.PEM)
        key_pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if key_path is None:  # certificate and key in one file, as personal/*.pem holds them
            cert_path.write_bytes(pem + key_pem)
            cert_path.chmod(0o600)
            return
        cert_path.write_bytes(pem)
        key_path.write_bytes(key_pem)
        key_path.chmod(0o600)


def _issue(cn: str, key: PrivateKey, issuer: Pair | None, usage: x509.KeyUsage) -> Pair:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(usage, critical=True)
    )
    return Pair(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


def _usage(sign: bool = False, encipher: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(sign, sign, encipher, False, False, ca, ca, False, False)


@dataclass(frozen=True)
class Pki:
    """A CA, one signer per key type, and an RSA-2048 partner (the recipient)."""

    ca: Pair
    signers: dict[str, Pair]
    partner: Pair

    @classmethod
    def make(cls) -> Pki:
        ca = _issue("bench CA", rsa.generate_private_key(65537, 2048), None, _usage(ca=True))
        keys: dict[str, PrivateKey] = {
            "rsa2048": rsa.generate_private_key(65537, 2048),
            "ec-p256": ec.generate_private_key(ec.SECP256R1()),
        }
        signers = {name: _issue(f"bench signer {name}", key, ca, _usage(sign=True)) for name, key in keys.items()}
        partner = _issue("bench partner", rsa.generate_private_key(65537, 2048), ca, _usage(encipher=True))
        return cls(ca, signers, partner)


CONFIG = """
[group]
name = "Bench"
signing_thumbprint = "{signer}"

[pipelines.SignAndEncrypt]
encode = [ {{ component = "mime_smime_encoder", signature_type = "BlobSign",
             enable_encryption = true, encryption_algorithm = "AES256"{extra} }} ]

[pipelines.PassThrough]   # no component at all: the worker with the encoder switched off

[send_ports.{port}]
host = "{host}"
pipeline = "SignAndEncrypt"
encryption_thumbprint = "{partner}"
delivery_key = "bench.encoded"

[send_ports.{off_port}]
host = "{host}"
pipeline = "PassThrough"
delivery_key = "bench.passthrough"
"""


def write_deployment(root: Path, pki: Pki, signer: str = "rsa2048", options: dict[str, str] | None = None) -> Path:
    """A store for ACCOUNT holding ``signer`` and the partner, and a config; returns the config path.

    ``options``: encoder properties of port Bench overriding the defaults (``encryption_algorithm = AES256``),
    e.g. ``{"key_encryption_algorithm": "RSA-OAEP"}``."""
    props = dict(options or {})
    cipher = props.pop("encryption_algorithm", None)
    store = root / "stores" / ACCOUNT
    pki.signers[signer].write(store / "personal" / "group-signing.pem")
    (store / "other-people").mkdir(parents=True, exist_ok=True)
    (store / "other-people" / "partner.cer").write_bytes(pki.partner.cert.public_bytes(serialization.Encoding.DER))
    config = root / "sendpipe.toml"
    text = CONFIG.format(
        extra="".join(f', {k} = "{v}"' for k, v in props.items()),
        signer=pki.signers[signer].thumbprint,
        partner=pki.partner.thumbprint,
        port=PORT,
        off_port=OFF_PORT,
        host=HOST,
    )
    if cipher is not None:
        text = text.replace('encryption_algorithm = "AES256"', f'encryption_algorithm = "{cipher}"')
    config.write_text(text)
    return config


# -- /proc ------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK  # less idle and iowait


def steal_seconds() -> float:
    """CPU seconds the hypervisor has stolen from this VM so far (all vCPUs; /proc/stat's 8th field).

    ``busy_seconds`` counts steal as busy: other VMs on the host show up as steal (0.1-1.1 of the 2 vCPUs
    seen here), which delays the broker and the worker like a busy core and slows what runs after it."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return int(fields[7]) / _TICK


def status_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field (VmHWM, VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def beam_pid() -> int | None:
    """The RabbitMQ node: the beam.smp process with the most CPU time (rabbitmqctl runs are short-lived)."""
    found: list[tuple[float, int]] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    found.append((cpu_seconds(int(entry.name)), int(entry.name)))
            except OSError:
                continue
    return max(found)[1] if found else None


def wal_files(mnesia: Path = Path("/var/lib/rabbitmq/mnesia")) -> set[str] | None:
    """RabbitMQ's quorum-queue write-ahead log files (Debian's default data dir), None if not readable.

    When the WAL reaches ``raft.wal_max_size_bytes`` (512 MiB by default) the node rolls it over and
    flushes it to per-queue segment files: a burst of broker CPU and I/O that stalls confirms for
    ~100 ms on a 2-core machine. The latency run counts rollovers in its window to say so.
    """
    try:
        return {p.name for p in mnesia.glob("*/quorum/*/*.wal")}
    except OSError:
        return None


def io_stall_ms() -> float | None:
    """Milliseconds all non-idle tasks of the machine were stalled on I/O, so far (PSI ``full``), None if unknown.

    Quorum queues fsync before they confirm: another user's disk traffic (a docker build) shows up here and
    in the confirm latency, not in any CPU figure."""
    try:
        for line in Path("/proc/pressure/io").read_text().splitlines():
            if line.startswith("full"):
                return int(line.rsplit("total=", 1)[1]) / 1000
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False).stdout.strip()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    malloc = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")) or "glibc defaults"
    return (
        f"{model}, {os.cpu_count()} cores; Python {platform.python_version()}, cryptography {cryptography.__version__},"
        f" {openssl}; malloc: {malloc}; load average at start {load}"
    )


# -- numbers and the table -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def verdict(ratio: float, target: float, *, at_most: bool = False) -> str:
    ok = ratio <= target if at_most else ratio >= target
    return "PASS" if ok else "MISS"


def size_name(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def table(title: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=False)]
    line = "| " + " | ".join(f"{{:{w}}}" for w in widths) + " |\n"
    out = sys.stdout
    out.write(f"\n{title}\n")
    out.write(line.format(*head))
    out.write("|" + "|".join("-" * (w + 2) for w in widths) + "|\n")
    for row in rows:
        out.write(line.format(*row))
    out.flush()


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


BenchRun = Callable[[argparse.Namespace, Path], Coroutine[object, object, None]]


def run_bench(prefix: str, run: BenchRun, args: argparse.Namespace) -> int:
    """A bench's whole run: the machine line first, then ``run`` in a throw-away directory removed after."""
    say(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        asyncio.run(run(args, Path(tmp)))
    return 0
