"""The RabbitMQ nodes the broker tests run on: every broker test and reliability scenario runs on each.

- ``rabbitmq-3.10``: the machine's node (Debian 12's package, 127.0.0.1:5672), shared with everything else on
  the machine: tests make vhosts on it and never stop, restart or reconfigure it.
- ``rabbitmq-4.3``: the project's own node (``scripts/rabbitmq4.sh``: a Debian sid chroot with RabbitMQ 4.3,
  127.0.0.1:5682, upstream 4.3 defaults), started by ``make test``. Being ours, the harness may stop and start
  its application (the broker-restart scenario).

A scenario that stops the broker runs on a node we own: 4.3 itself, and for 3.10 a private node of the machine's
packages (``scripts/rabbitmq310-private.sh``, 127.0.0.1:5692), started for that scenario and stopped after it.

A node that does not answer makes its tests fail, with how to start it: never a skip.
"""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
RABBITMQ4 = REPO / "scripts" / "rabbitmq4.sh"
RABBITMQ310_PRIVATE = REPO / "scripts" / "rabbitmq310-private.sh"
_UNREACHABLE: set[str] = set()  # brokers found down in this process


@dataclass(frozen=True)
class Broker:
    """One RabbitMQ node: where its AMQP listener is, how to run its ``rabbitmqctl``, what it is."""

    name: str  # the test id, e.g. "rabbitmq-4.3"
    version: str  # "major.minor"
    host: str
    port: int
    ctl_argv: tuple[str, ...]  # the node's rabbitmqctl; ctl arguments follow
    owned: bool  # the project's own node: its application may be stopped and started
    how_to_start: str
    script: Path | None = None  # the project's script that starts/stops this node (start on demand)

    @property
    def url(self) -> str:
        """The AMQP base URL, without vhost (append ``/<vhost>``)."""
        return f"amqp://guest:guest@{self.host}:{self.port}"

    def url_for(self, vhost: str) -> str:
        return f"{self.url}/{vhost}"

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    def ctl_run(self, *args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl ARGS`` on this node (a 4.3 call goes into the chroot: about half a second)."""
        return subprocess.run([*self.ctl_argv, *args], capture_output=True, text=True, timeout=timeout_s, check=False)

    def ctl(self, *args: str, timeout_s: float = 90, check: bool = True) -> str:
        """``rabbitmqctl -s ARGS`` (no banners, no table headers): its stdout; raises with stderr on failure."""
        done = subprocess.run(
            [*self.ctl_argv, "-s", *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{self.name}: rabbitmqctl {' '.join(args)} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[:500]}"
            )
        return done.stdout

    def amqp_answers(self, timeout_s: float = 3) -> bool:
        """Something speaks AMQP on the port (a wrong protocol header is answered with the server's)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout_s) as sock:
                sock.sendall(b"XXXX\r\n\r\n")
                return sock.recv(4) == b"AMQP"
        except OSError:
            return False

    def require(self) -> None:
        """Fail (never skip) when the node does not answer, saying how to start it. After one such failure the
        next tests of this broker fail at once (no 10 s wait each)."""
        if self.name in _UNREACHABLE and self.amqp_answers():
            _UNREACHABLE.discard(self.name)
        deadline = time.monotonic() + (0 if self.name in _UNREACHABLE else 10)  # a fault test may be bringing it back
        while not self.amqp_answers():
            if time.monotonic() >= deadline:
                _UNREACHABLE.add(self.name)
                raise AssertionError(
                    f"{self.name}: no AMQP listener on {self.host}:{self.port}; the broker tests run on every "
                    f"broker of tests/brokers.py. Start it with: {self.how_to_start}"
                )
            time.sleep(0.5)

    def start(self) -> None:
        """Start the node with its script (owned nodes; idempotent); fail with the script's output."""
        if self.script is None:
            raise AssertionError(f"{self.name}: not ours to start ({self.how_to_start})")
        done = subprocess.run([str(self.script), "start"], capture_output=True, text=True, timeout=180, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{self.name}: {self.script.name} start failed: {done.stderr.strip()[-800:]}")

    def stop(self) -> None:
        """Stop the node with its script (the whole node, not only the application)."""
        if self.script is None:
            raise ValueError(f"{self.name}: not ours to stop")
        subprocess.run([str(self.script), "stop"], capture_output=True, text=True, timeout=120, check=True)

    def app_running(self) -> bool:
        """The RabbitMQ application is running (not stopped with ``stop_app``)."""
        done = self.ctl_run("-q", "eval", "rabbit:is_running().", timeout_s=60)
        return done.returncode == 0 and done.stdout.strip() == "true"

    def ensure_running(self) -> None:
        """Start the RabbitMQ application if a fault left it stopped (owned nodes only), wait until booted."""
        if self.owned and not self.app_running():
            self.ctl("start_app", timeout_s=120)
        self.ctl("await_startup", "--timeout", "120", timeout_s=150)

    def add_vhost(self, name: str, user: str = "guest") -> None:
        """A vhost with full permissions for ``user``, in one ctl call (see ``add_vhost_expr``)."""
        self.ctl("eval", add_vhost_expr(name, user), timeout_s=120)

    @functools.cached_property
    def server_version(self) -> str:
        """The node's full version (asks the node once)."""
        return self.ctl("eval", "rabbit_misc:version().", timeout_s=60).strip().strip('"')


RABBITMQ_310 = Broker(
    name="rabbitmq-3.10",
    version="3.10",
    host="127.0.0.1",
    port=5672,
    ctl_argv=("rabbitmqctl",),
    owned=False,
    how_to_start="scripts/ensure-services.sh (rabbitmq-server -detached)",
)
RABBITMQ_43 = Broker(
    name="rabbitmq-4.3",
    version="4.3",
    host="127.0.0.1",
    port=5682,
    ctl_argv=(str(RABBITMQ4), "ctl"),
    owned=True,
    how_to_start="scripts/rabbitmq4.sh setup && scripts/rabbitmq4.sh start (make services)",
    script=RABBITMQ4,
)
RABBITMQ_310_PRIVATE = Broker(
    name="rabbitmq-3.10-private",
    version="3.10",
    host="127.0.0.1",
    port=5692,
    ctl_argv=(str(RABBITMQ310_PRIVATE), "ctl"),
    owned=True,
    how_to_start="scripts/rabbitmq310-private.sh start",
    script=RABBITMQ310_PRIVATE,
)
BROKERS: tuple[Broker, ...] = (RABBITMQ_310, RABBITMQ_43)  # what every broker test runs on
BY_NAME = {b.name: b for b in BROKERS}
# Where a test that must stop the broker runs, per broker: a node of the same version that is ours.
OWNED_TWIN = {RABBITMQ_310.name: RABBITMQ_310_PRIVATE, RABBITMQ_43.name: RABBITMQ_43}


def broker_of(url: str) -> Broker:
    """The broker an AMQP URL (of a test's vhost) points at, by port."""
    port = urlsplit(url).port
    for broker in (*BROKERS, RABBITMQ_310_PRIVATE):
        if broker.port == port:
            return broker
    raise LookupError(f"{url}: not one of the test brokers ({', '.join(b.name for b in BROKERS)})")


def add_vhost_expr(name: str, user: str = "guest") -> str:
    """The Erlang expression (``rabbitmqctl eval``) that adds vhost ``name`` with full permissions for ``user``.

    One ctl call instead of two (each costs ~0.7 s; 4.3's goes into the chroot): the internal functions that
    ``add_vhost`` and ``set_permissions`` call, the same on 3.10 and 4.3. (``import_definitions`` would do it
    too, but 4.3's CLI cannot read definitions from stdin.)
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or not re.fullmatch(r"[A-Za-z0-9._-]+", user):
        raise ValueError(f"not a plain vhost/user name: {name!r} {user!r}")
    who = '<<"sendpipe-tests">>'
    return (
        f'ok = rabbit_vhost:add(<<"{name}">>, {who}), '
        f'ok = rabbit_auth_backend_internal:set_permissions(<<"{user}">>, <<"{name}">>, '
        f'<<".*">>, <<".*">>, <<".*">>, {who}).'
    )
