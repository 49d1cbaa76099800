"""The container test's driver: the private engine (scripts/containers.sh), docker-compose.yml with this CI's
override, and what producers and partners do against the deployment's RabbitMQ."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "containers.sh"
COMPOSE = REPO / "docker-compose.yml"
OVERRIDE = Path(__file__).with_name("compose.override.yml")
# Free on this machine (its RabbitMQ 5672/25672/4369, the project's nodes 5682/25682/4380 and 5692/25692/4390).
PORTS = {
    "CT_AMQP_PORT": 5712,
    "CT_DIST_PORT": 25712,
    "CT_EPMD_PORT": 4400,
    "CT_MANAGEMENT_PORT": 15712,
    "CT_PROMETHEUS_PORT": 15722,
    "CT_METRICS_B": 19713,
    "CT_METRICS_AUDIT": 19714,
}
AMQP_URL = f"amqp://guest:guest@127.0.0.1:{PORTS['CT_AMQP_PORT']}/"
UID = 10001  # the README's choice as root: a non-root uid that owns ./demo
WORKERS = ("sendhost-a", "sendhost-b", "audithost")
ACCOUNT = {"sendhost-a": "svc-biztalk-a", "sendhost-b": "svc-biztalk-b", "audithost": "svc-biztalk-a"}
MAILBOX = {"FabrikamOrders": "demo.partner.fabrikam", "NorthwindInvoices": "demo.partner.northwind",
           "AuditCopy": "demo.partner.audit"}  # fmt: skip
PARTNER = {"FabrikamOrders": "fabrikam", "NorthwindInvoices": "northwind", "AuditCopy": None}
TIMINGS: dict[str, float] = {}  # printed at the end of the session (tests/containers/conftest.py)


def timed(label: str, t0: float) -> None:
    TIMINGS[label] = time.monotonic() - t0


def ports_free() -> None:
    """Every port the deployment binds is free on 127.0.0.1 (else fail naming it, before anything starts)."""
    for name, port in PORTS.items():
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise AssertionError(f"port {port} ({name}, tests/containers/deployment.py) is taken: {exc}") from None


def script(*args: str, timeout_s: float = 600) -> None:
    """scripts/containers.sh, its progress and timings on the test's stderr; a failure fails the test."""
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise AssertionError(f"scripts/containers.sh {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")


def client_env() -> dict[str, str]:
    """DOCKER_HOST, DOCKER_CONFIG, PATH for the private engine, as `scripts/containers.sh env` prints them."""
    out = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, timeout=30, check=True).stdout
    words = shlex.split(out)
    assert words[0] == "export", out
    return dict(w.split("=", 1) for w in words[1:])


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> float:
    """Seconds until ``check()`` holds, or fail naming ``what``."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(every_s)
    return time.monotonic() - t0


class Deployment:
    """docker-compose.yml run in ``project`` (its ./demo there, not in the work tree), as the README says for root."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.demo = project / "demo"
        self.init_output = ""  # what demo-init printed the first time
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SENDPIPE_", "DOCKER_"))}
        self.env = {**base, **client_env(), **{k: str(v) for k, v in PORTS.items()},
                    "SENDPIPE_UID": str(UID), "SENDPIPE_GID": str(UID)}  # fmt: skip

    def docker(self, *args: str, check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout_s,
                              check=False)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def compose(self, *args: str, check: bool = True, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
        files = ["-f", str(COMPOSE), "-f", str(OVERRIDE), "--project-directory", str(self.project)]
        return self.docker("compose", *files, *args, check=check, timeout_s=timeout_s)

    def containers(self, service: str, *, running_only: bool = True) -> list[str]:
        args = ["ps", "-q", service] if running_only else ["ps", "-a", "-q", service]
        return sorted(self.compose(*args).stdout.split())

    def inspect(self, container: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.docker("inspect", container).stdout)
        return data[0]

    def health(self, container: str) -> str:
        status: str = self.inspect(container)["State"].get("Health", {}).get("Status", "none")
        return status

    def wait_healthy(self, services: Sequence[str], timeout_s: float, count: dict[str, int] | None = None) -> float:
        def all_healthy() -> bool:
            for svc in services:
                ids = self.containers(svc)
                if len(ids) != (count or {}).get(svc, 1) or any(self.health(c) != "healthy" for c in ids):
                    return False
            return True

        return wait_until(f"{', '.join(services)} healthy", all_healthy, timeout_s, every_s=1.0)

    def exec(self, container: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.docker("exec", container, *cmd, check=check, timeout_s=30)

    def log_events(self, container: str, event: str) -> list[dict[str, Any]]:
        done = self.docker("logs", container)
        lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
        return [e for e in lines if e.get("event") == event]

    def host_cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`sendpipe` on this machine, as a producer or operator beside the deployment."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("SENDPIPE_")}
        full = {
            **base,
            "SENDPIPE_AMQP_URL": AMQP_URL,
            "SENDPIPE_CONFIG": str(self.demo / "config/sendpipe.toml"),
            **env,
        }
        return subprocess.run([str(REPO / ".venv/bin/sendpipe"), *args], env=full, capture_output=True, text=True,
                              timeout=120, check=True)  # fmt: skip
