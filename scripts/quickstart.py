"""The quickstart (`make run`): a demo group, two host instances under two service accounts, samples
sent and every delivery decrypted and verified with OpenSSL as the partner would — until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aio_pika
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from worker.demo.partner import OpenSSLFailed, unwrap

ROOT = Path(__file__).resolve().parent.parent
SENDPIPE = str(Path(sys.executable).with_name("sendpipe"))
ACCOUNTS = ("svc-biztalk-a", "svc-biztalk-b")
SAMPLES = {
    "order-1.edi": ("FabrikamOrders", b"ISA*00*          *00*\nGS*PO*CONTOSO*FABRIKAM\nST*850*0001\n"),
    "invoice-1.bin": ("NorthwindInvoices", bytes(range(256)) + b"\r\n\x00 binary survives \r\r\n"),
    "order-2.xml": ("FabrikamOrders", b'<?xml version="1.0"?>\n<Order id="2">\n  <Qty>3</Qty>\n</Order>\n'),
}


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _thumbprint(pem: Path) -> str:
    der = x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def _env(demo: Path, account: str, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENDPIPE_")}
    env.update(
        SENDPIPE_AMQP_URL=url,
        SENDPIPE_CONFIG=str(demo / "config/sendpipe.toml"),
        SENDPIPE_HOST="SendHost",
        SENDPIPE_HOST_INSTANCE=f"{account}-1",
        SENDPIPE_SERVICE_ACCOUNT=account,
        SENDPIPE_STORE_ROOT=str(demo / "stores"),
        SENDPIPE_STORE_PASSWORD=(demo / "secrets" / "sendpipe_store_password").read_text().strip(),
        SENDPIPE_LOG_FORMAT="json",
    )
    return env


def _wait_started(log: Path, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"instance exited with {proc.returncode}; see {log}")
        text = log.read_text(errors="replace") if log.exists() else ""
        if '"consumer.started"' in text:
            return
        time.sleep(0.1)
    raise SystemExit(f"instance did not start consuming within {timeout_s}s; see {log}")


async def _watch(url: str, demo: Path, expected: dict[str, bytes], ready: asyncio.Event, verified: list[int]) -> None:
    """Consume what partners receive and check each message with OpenSSL, byte for byte."""
    partners = {_thumbprint(p): p for p in (demo / "partners").glob("*.pem")}
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel()
        exchange = await ch.declare_exchange("sendpipe.delivery", aio_pika.ExchangeType.TOPIC, durable=True)
        # This run's own mailbox: exclusive (gone with the connection). A transient non-exclusive queue is a
        # deprecated feature that RabbitMQ 4.3 refuses by default (`transient_nonexcl_queues`).
        queue = await ch.declare_queue("quickstart.partner-mailbox", durable=False, exclusive=True)
        await queue.bind(exchange, routing_key="#")
        ready.set()
        work = Path(tempfile.mkdtemp(prefix="sendpipe-quickstart-"))
        async with queue.iterator() as messages:
            async for msg in messages:
                async with msg.process():
                    verified.append(_check(msg, demo, partners, expected, work))
    finally:
        await conn.close()


def _check(
    msg: aio_pika.abc.AbstractIncomingMessage,
    demo: Path,
    partners: dict[str, Path],
    expected: dict[str, bytes],
    work: Path,
) -> int:
    h = msg.headers
    recipient = str(h.get("sendpipe-recipient-thumbprint", ""))
    cert = partners.get(recipient)
    key = cert.with_suffix(".key") if cert else None
    try:
        result = unwrap(
            msg.body, work / str(msg.message_id), ca_pem=demo / "ca" / "ca.pem", recip_cert=cert, recip_key=key
        )
    except OpenSSLFailed as exc:
        _say(f"  FAILED {msg.message_id}: {exc}")
        return 0
    want = expected.get(str(h.get("sendpipe-filename", "")))
    same = "identical to the sample" if want == result.payload else "payload as received"
    _say(
        f"  verified {msg.message_id} [{_text(h.get('sendpipe-send-port'))} -> {msg.routing_key}] by "
        f"{_text(h.get('sendpipe-service-account'))}: {' + '.join(result.layers)}, signer {result.signer_thumbprint}, "
        f"{len(result.payload)} bytes {same} (openssl cms -decrypt/-verify OK)"
    )
    return 1


async def _main(args: argparse.Namespace) -> int:
    demo: Path = args.demo
    url = os.environ.get("SENDPIPE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    if not (demo / "config/sendpipe.toml").exists():
        _say(f"writing a demo group into {demo} (sendpipe demo init)")
        subprocess.run([SENDPIPE, "demo", "init", str(demo)], check=True, stdout=subprocess.DEVNULL)
    stop, ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    expected = {name: body for name, (_, body) in SAMPLES.items()}
    verified: list[int] = []
    watcher = asyncio.create_task(_watch(url, demo, expected, ready, verified))
    await asyncio.wait_for(ready.wait(), 30)
    (demo / "logs").mkdir(exist_ok=True)
    procs = []
    for account in ACCOUNTS:
        log = demo / "logs" / f"{account}.log"
        out = log.open("ab")
        proc = subprocess.Popen([SENDPIPE, "run"], env=_env(demo, account, url), stdout=out, stderr=subprocess.STDOUT)
        procs.append((account, proc, log))
        _say(f"host instance of SendHost under service account {account}: pid {proc.pid}, log {log}")
    try:
        for _, proc, log in procs:
            await asyncio.to_thread(_wait_started, log, proc)
        samples = demo / "samples"
        samples.mkdir(exist_ok=True)
        for name, (port, body) in SAMPLES.items():
            (samples / name).write_bytes(body)
            subprocess.run(
                [SENDPIPE, "send", "--port", port, str(samples / name)],
                env=_env(demo, ACCOUNTS[0], url),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        _say(f"sent {len(SAMPLES)} samples; what the partners receive:")
        _say(
            f"Running. Send more: {SENDPIPE} send --port FabrikamOrders FILE (with the env of `sendpipe demo init`)."
            " Ctrl-C stops."
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.seconds)
    finally:
        stop.set()
        for _, proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for _, proc, _ in procs:
            proc.wait(timeout=60)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    delivered = sum(log.read_text().count('"message.delivered"') for _, _, log in procs)
    summary = {"delivered": delivered, "verified_with_openssl": sum(verified), "failed": verified.count(0)}
    _say(json.dumps(summary))
    return 0 if sum(verified) >= len(SAMPLES) and not verified.count(0) else 1


def _text(value: object) -> str:
    """A header value as text (AMQP long strings may arrive as bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo", type=Path, default=ROOT / "demo", help="demo directory (created if missing)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
