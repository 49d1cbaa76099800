"""aiormq's own test suite against our RabbitMQ, as released (7.2.4) and with the stream-publish patch applied.

    .venv/bin/python -m bench.aiormq_patch                  # the machine's RabbitMQ 3.10 (5672)
    .venv/bin/python -m bench.aiormq_patch --broker 4.3     # the project's RabbitMQ 4.3 node (5682)
    .venv/bin/python -m bench.aiormq_patch -k stream        # only tests matching a pytest -k expression

Why: `bench/patches/aiormq-7.2.4-stream-publish.patch` (bench/memory.py's fix of target 4) changes how aiormq
writes a publish, and is meant for upstream. It must pass aiormq's own suite, and its own tests
(tests/test_stream_publish.py, added by the patch) must pass with it. This runs the suite twice in a
throw-away directory: aiormq 7.2.4's sdist (from PyPI, hash checked, the same files as the installed aiormq;
github.com/mosquito/aiormq's history in the search mirror stops at 7.0.0) unpatched, then patched
(`patch -p1`); it prints passed / failed / skipped / errors for each, and the failures by name.

The suite's test dependencies (aiomisc-pytest, aiomisc and theirs) go into a temporary `pip --target`
directory put on PYTHONPATH; the venv's pytest runs it; nothing is installed into the venv. The broker:
a vhost of its own (`rabbitmqctl add_vhost`, deleted at the end), its URL in AMQP_URL; the sdist's
conftest.py names the fixtures `rabbitmq_container` and `amqp_direct_url` without defining them (upstream
defines them in a conftest that starts Docker unless AMQP_URL is set), so a root conftest.py here defines
them from AMQP_URL, never Docker. The suite's TLS cases (`amqps`, `amqps-client`, ssl tests) need a TLS
listener, which our brokers do not have and must not be given: a TLS front end in this process
(127.0.0.1, the suite's tests/certs/server.pem, client certificates checked against its ca.pem, as its
rabbitmq.conf asks) forwards to the broker's plain port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiormq

from bench.common import run_bench, say, table
from bench.rig import NODES, Node

VERSION = "7.2.4"
SDIST = f"aiormq-{VERSION}.tar.gz"
SDIST_SHA256 = "5fd20bb9583d73de85572198496b65cf028f27527c1733c9840d458e0b40e8fa"  # PyPI's aiormq-7.2.4.tar.gz
PATCH = Path(__file__).with_name("patches") / "aiormq-7.2.4-stream-publish.patch"
# The suite's test requirements (pyproject dependency-groups dev: aiomisc-pytest>=2,<3), installed --no-deps
# so that no second pytest lands on the path; the venv has pamqp, yarl and pytest-timeout.
TEST_DEPS = ("aiomisc-pytest>=2,<3", "aiomisc>=18,<19", "aiothreads>=1.1.4", "colorlog>=6,<7", "logging-journald")
SUITE_TIMEOUT_S = 1200
TEST_TIMEOUT_S = 120

CONFTEST = '''"""Broker fixtures from AMQP_URL (bench/aiormq_patch.py): upstream's conftest starts Docker without it."""
import os
from dataclasses import dataclass

import pytest
from yarl import URL


@dataclass
class ContainerInfo:
    id: str
    ports: dict
    host: str


@pytest.fixture(scope="session")
def rabbitmq_container():
    url = URL(os.environ["AMQP_URL"])
    ports = {"5672/tcp": url.port, "5671/tcp": int(os.environ["AMQPS_PORT"])}
    return ContainerInfo("external", ports, url.host)


@pytest.fixture(scope="session")
def amqp_direct_url():
    return URL(os.environ["AMQP_URL"])
'''


@dataclass
class Outcome:
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    returncode: int = 0


def fetch_sdist(root: Path, given: Path | None) -> Path:
    """The 7.2.4 sdist: ``given``, or downloaded from PyPI with the venv's pip (its hash printed and checked)."""
    if given is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "aiormq",
             f"aiormq=={VERSION}", "-d", str(root)],
            check=True, timeout=300,
        )  # fmt: skip
        given = root / SDIST
    digest = hashlib.sha256(given.read_bytes()).hexdigest()
    say(f"sdist: {given.name} sha256 {digest}")
    if digest != SDIST_SHA256:
        raise SystemExit(f"{given.name}: sha256 {digest}, expected {SDIST_SHA256}")
    return given


def export(sdist: Path, dest: Path, patched: bool) -> Path:
    """The sdist unpacked into ``dest`` (its aiormq/ and tests/), plus our conftest; patched if asked."""
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    tree = dest / f"aiormq-{VERSION}"
    installed = Path(str(aiormq.__file__)).parent
    for path in sorted((tree / "aiormq").glob("*.py")):
        if path.read_bytes() != (installed / path.name).read_bytes():
            raise SystemExit(f"the sdist's aiormq/{path.name} is not the installed one")
    (tree / "conftest.py").write_text(CONFTEST)
    if patched:
        subprocess.run(["patch", "-s", "-p1", "-d", str(tree), "-i", str(PATCH)], check=True, timeout=60)
    return tree


def install_deps(target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *TEST_DEPS],
        check=True, timeout=600,
    )  # fmt: skip


class TlsFront:
    """A TLS listener on 127.0.0.1 that forwards each connection to the broker's plain AMQP port."""

    def __init__(self, certs: Path, port: int) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certs / "server.pem", certs / "server.key")
        self.context.load_verify_locations(certs / "ca.pem")
        self.context.verify_mode = ssl.CERT_OPTIONAL  # verify_peer, fail_if_no_peer_cert = false
        self.target = port
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.context)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)


def read_log(log: Path) -> str:
    return log.read_text(errors="replace")


def summary(text: str) -> Outcome:
    """Counts from pytest's last line ("3 failed, 680 passed, 2 skipped in 300s") and the FAILED/ERROR lines."""
    outcome = Outcome()
    last = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|error|skipped)", line)]
    if last:
        for number, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)", last[-1]):
            outcome.counts["errors" if word.startswith("error") else word] = int(number)
    outcome.failures = [line for line in text.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return outcome


async def run_suite(tree: Path, deps: Path, url: str, tls_port: int, select: str | None, log: Path) -> Outcome:
    argv = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "--timeout", str(TEST_TIMEOUT_S),
            "-W", "ignore::DeprecationWarning", "tests"]  # fmt: skip
    if select:
        argv += ["-k", select]
    env = {**os.environ, "AMQP_URL": url, "AMQPS_PORT": str(tls_port), "PYTHONPATH": f"{tree}{os.pathsep}{deps}"}
    env.pop("PYTHONSAFEPATH", None)
    started = time.monotonic()
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            await asyncio.wait_for(proc.wait(), SUITE_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            say(f"  the suite did not end within {SUITE_TIMEOUT_S} s: killed")
    outcome = summary(read_log(log))
    outcome.seconds = time.monotonic() - started
    outcome.returncode = proc.returncode if proc.returncode is not None else -1
    return outcome


def imported_aiormq(tree: Path, deps: Path) -> str:
    """Which aiormq the suite imports from ``tree`` (and whether it is the patched one)."""
    probe = "import aiormq, aiormq.channel as c; print(aiormq.__file__, hasattr(c.Channel, 'STREAM_BYTES'))"
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{deps}"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tree, env=env, capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    return done.stdout.strip()


async def run(args: argparse.Namespace, root: Path) -> None:
    node: Node = NODES[args.broker]
    sdist = fetch_sdist(root, args.sdist)
    deps = root / "deps"
    install_deps(deps)
    vhost = f"aiormq-patch-{uuid.uuid4().hex[:8]}"
    node.ctl("add_vhost", vhost)
    results: list[tuple[str, Outcome]] = []
    try:
        node.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        url = f"{node.url}/{vhost}"
        say(f"broker: {node.name}, vhost {vhost}")
        for name, patched in (("aiormq 7.2.4", False), ("aiormq 7.2.4 + stream-publish patch", True)):
            tree = export(sdist, root / ("patched" if patched else "plain"), patched)
            say(f"{name}: imports {imported_aiormq(tree, deps)}")
            front = TlsFront(tree / "tests" / "certs", node.port)
            tls_port = await front.start()
            try:
                outcome = await run_suite(
                    tree, deps, url, tls_port, args.k, root / f"{'patched' if patched else 'plain'}.log"
                )
            finally:
                await front.stop()
            say(f"  {outcome.counts} in {outcome.seconds:.0f} s, pytest exit {outcome.returncode}")
            for line in outcome.failures:
                say(f"  {line[:200]}")
            if args.keep_logs:
                shutil.copy(
                    root / f"{'patched' if patched else 'plain'}.log",
                    args.keep_logs / f"{args.broker}-{'patched' if patched else 'plain'}.log",
                )
            results.append((name, outcome))
    finally:
        node.ctl("delete_vhost", vhost)
    head = ["aiormq", "passed", "failed", "errors", "skipped", "seconds"]
    rows = [[name, *(str(o.counts.get(k, 0)) for k in head[1:5]), f"{o.seconds:.0f}"] for name, o in results]
    table(f"aiormq's test suite on {node.name}{' (-k ' + args.k + ')' if args.k else ''}", head, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--broker", choices=sorted(NODES), default="3.10", help="which RabbitMQ node (default 3.10)")
    parser.add_argument("--sdist", type=Path, help=f"a local {SDIST} instead of downloading it (same hash)")
    parser.add_argument("-k", help="a pytest -k expression: run only the tests it selects")
    parser.add_argument("--keep-logs", type=Path, help="copy both pytest logs into this directory")
    args = parser.parse_args()
    return run_bench("sendpipe-aiormq-patch-", run, args)


if __name__ == "__main__":
    sys.exit(main())
