"""docker-compose.yml and Dockerfile, proven without a Docker engine.

(a) The compose file validates against the Compose Specification's JSON schema (as vendored by the
    pinned ``check-jsonschema`` package) and keeps its structural promises.
(b) Its wiring runs for real: each worker service is started as a local `sendpipe` process with the
    service's environment and mounts translated to this machine, against RabbitMQ, and what it delivers
    is opened with openssl. The image build, real containers and compose itself are driven by
    tests/containers/ (a private Docker engine); this module needs none.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from brokerkit import SENDPIPE, Client, Worker
from ruamel.yaml import YAML
from smime_check import unwrap

from worker.settings import StoreSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SECRET = "sendpipe_store_password"
# worker service -> (service account, host), as the brief and SPEC name them
WORKERS = {
    "sendhost-a": ("svc-biztalk-a", "SendHost"),
    "sendhost-b": ("svc-biztalk-b", "SendHost"),
    "audithost": ("svc-biztalk-a", "AuditHost"),
}
PORTS = {  # send port -> (host, partner whose key opens it, or None when only signed)
    "FabrikamOrders": ("SendHost", "fabrikam"),
    "NorthwindInvoices": ("SendHost", "northwind"),
    "AuditCopy": ("AuditHost", None),
}


def _compose() -> dict[str, Any]:
    """The compose file as Compose reads it with no variables set (``${VAR:-default}`` -> default)."""
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), COMPOSE.read_text(encoding="utf-8"))
    data: dict[str, Any] = YAML(typ="safe", pure=True).load(text)
    return data


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))
    return schema


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def _instr(name: str) -> list[str]:
    return [args for word, args in _dockerfile() if word == name]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _instr("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


# -- (a) the files themselves ------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema = _schema()
    assert schema["title"] == "Compose Specification"
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    compose = _compose()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    assert "version" not in compose  # the Compose Specification has no version
    # The validator bites: a misspelt key is an error.
    broken = copy.deepcopy(compose)
    broken["services"]["sendhost-a"]["healthchek"] = broken["services"]["sendhost-a"].pop("healthcheck")
    assert not validator.is_valid(broken)


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, one list per build stage (each starts with its FROM)."""
    stages: list[list[tuple[str, str]]] = []
    for word, args in _dockerfile():
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, args))
    return stages


def test_dockerfile_promises() -> None:
    # Two stages: the wheel (worker/smime/_crlf.c compiled, gcc there only), then the runtime image.
    assert _instr("FROM") == ["python:3.11-slim AS wheel", "python:3.11-slim"]
    build, runtime = _stages()
    build_runs = [a for w, a in build if w == "RUN"]
    assert any("apt-get install" in r and "gcc" in r for r in build_runs)
    assert any("pip wheel --no-deps --no-build-isolation --no-index" in r for r in build_runs)
    assert any(re.search(r"--require-hashes --only-binary :all: -r /tmp/setuptools.txt", r) for r in build_runs)
    runtime_runs = [a for w, a in runtime if w == "RUN"]
    assert not any("apt-get" in r or "gcc" in r for r in runtime_runs)  # no compiler in the image
    assert ("COPY", "--from=wheel /wheels /wheels") in runtime
    assert _instr("USER")[-1] == "sendpipe"
    assert any("useradd" in run and "sendpipe" in run for run in runtime_runs)
    assert any(
        re.search(r"pip install --no-deps --no-index /wheels/sendpipe-\*\.whl && rm -rf", r) for r in runtime_runs
    )
    assert [json.loads(a) for a in _instr("ENTRYPOINT")] == [["sendpipe"]]
    assert [json.loads(a) for a in _instr("CMD")] == [["run"]]
    (health,) = _instr("HEALTHCHECK")
    assert json.loads(health.split(" CMD ", 1)[1]) == ["sendpipe", "health"]
    # Builds without Docker Hub (no frontend image to pull) and behind a TLS-inspecting proxy.
    assert not DOCKERFILE.read_text().startswith("# syntax")
    args = {a.split("=", 1)[0] for a in _instr("ARG")}
    assert {"PIP_INDEX", "BUILD_CA_BUNDLE"} <= args
    installs = [run for run in _instr("RUN") if "pip install" in run]
    assert len(installs) == 2  # the build stage's setuptools, the runtime's lock: both through the proxy args
    for install in installs:
        assert '${PIP_INDEX:+--index-url "$PIP_INDEX"}' in install and "BUILD_CA_BUNDLE" in install
    env = _image_env()
    assert env["SENDPIPE_HEALTH_FILE"] == "/tmp/sendpipe.health"
    assert env["MALLOC_ARENA_MAX"] == "2"
    ignored = (REPO / ".dockerignore").read_text().split()
    for pattern in (".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache", "demo", "**/*.pfx", "**/*.key"):
        assert pattern in ignored, pattern
    assert not {"worker", "pyproject.toml"} & set(ignored)


def test_compose_structure_promises() -> None:
    compose = _compose()
    services = compose["services"]

    rabbit = services["rabbitmq"]
    assert rabbit["image"] == "rabbitmq:4-management"
    assert rabbit["healthcheck"]["test"][1:] == ["rabbitmq-diagnostics", "-q", "check_port_connectivity"]
    assert sorted(rabbit["ports"]) == ["127.0.0.1:15672:15672", "127.0.0.1:5672:5672"]

    init = services["demo-init"]
    assert init["build"] == "." and init["command"][:2] == ["demo", "init"] and init["command"][-1] == "/demo"
    assert init["command"][-3:-1] == ["--shown-as", "./demo"]  # it prints the paths you see, not /demo
    assert [(v["source"], v["target"]) for v in init["volumes"]] == [("./demo", "/demo")]
    assert init["volumes"][0]["bind"]["create_host_path"] is False  # the engine would make ./demo root's

    mailbox = services["partner-mailbox"]
    assert mailbox["command"] == ["demo", "mailbox"] and mailbox["restart"] == "no"
    assert mailbox["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}

    assert compose["secrets"][SECRET] == {"file": f"./demo/secrets/{SECRET}"}
    for name, (account, host) in WORKERS.items():
        svc = services[name]
        env = svc["environment"]
        assert (env["SENDPIPE_SERVICE_ACCOUNT"], env["SENDPIPE_HOST"]) == (account, host), name
        assert urlsplit(env["SENDPIPE_AMQP_URL"]).hostname == "rabbitmq"
        assert "SENDPIPE_STORE_PASSWORD" not in env  # only as a secret
        assert svc["secrets"] == [SECRET]
        assert svc["healthcheck"]["test"] == ["CMD", "sendpipe", "health", "--ready"]
        assert env["SENDPIPE_METRICS_LISTEN"] == "0.0.0.0:9464"
        assert svc["logging"]["options"]["max-size"]  # rotated
        assert svc["depends_on"] == {
            "rabbitmq": {"condition": "service_healthy"},
            "demo-init": {"condition": "service_completed_successfully"},
            "partner-mailbox": {"condition": "service_completed_successfully"},
        }
        assert not str(svc.get("user", "")).startswith(("0", "root"))
        assert "container_name" not in svc and "ports" not in svc  # or --scale could not work
        mounts = {v["target"]: v for v in svc["volumes"]}
        assert all(v["read_only"] for v in mounts.values()), name
        # The config's folder, not the file: a replaced file (sed -i) is seen inside.
        assert env["SENDPIPE_CONFIG"] == "/config/sendpipe.toml" and mounts["/config"]["source"] == "./demo/config"
        root = env["SENDPIPE_STORE_ROOT"]
        stores = {t: v["source"] for t, v in mounts.items() if t.startswith(root + "/") or t == root}
        assert stores == {f"{root}/{account}": f"./demo/stores/{account}"}, name  # its own store, nothing else
        assert {v["source"] for v in mounts.values()} == {"./demo/config", f"./demo/stores/{account}"}


def test_the_secret_name_is_the_store_password_setting(tmp_path: Path) -> None:
    (tmp_path / SECRET).write_text("from-a-secret")
    settings = StoreSettings(_secrets_dir=str(tmp_path), service_account="svc")  # type: ignore[call-arg]
    assert settings.store_password is not None
    assert settings.store_password.get_secret_value() == "from-a-secret"


# -- (b) the wiring, run as local processes ---------------------------------------------------


@dataclass
class Service:
    """A compose service mapped onto this machine: its container filesystem and environment."""

    name: str
    rootfs: Path  # what the container sees: its mounts (symlinks) and tmpfs, nothing else
    env: dict[str, str]
    argv: list[str]


def _container_path(rootfs: Path, path: str) -> Path:
    return rootfs / path.lstrip("/")


def _service(compose: dict[str, Any], name: str, project: Path, work: Path, amqp_url: str | None) -> Service:
    """Translate one service: volumes become symlinks in a per-service root, container paths in its
    environment and command point into that root, the broker host becomes the test's vhost, and the
    secret (which cannot be written to /run/secrets here) becomes the variable it stands for."""
    svc = compose["services"][name]
    rootfs = work / "rootfs" / name
    rootfs.mkdir(parents=True)
    for mount in svc.get("volumes", []):
        assert mount["type"] == "bind", mount
        link = _container_path(rootfs, mount["target"])
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((project / mount["source"]).resolve())
    for tmpfs in svc.get("tmpfs", []):
        _container_path(rootfs, tmpfs).mkdir(parents=True, exist_ok=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith("SENDPIPE_")}
    for key, raw in {**_image_env(), **svc.get("environment", {})}.items():
        value = str(raw)
        if key == "SENDPIPE_AMQP_URL":
            assert urlsplit(value).hostname in compose["services"], value  # a service of this file
            assert amqp_url is not None
            value = amqp_url
        elif key == "SENDPIPE_METRICS_LISTEN":
            assert value.startswith("0.0.0.0:"), value  # each container's own network namespace: here, a free port
            value = f"127.0.0.1:{_free_port()}"
        elif value.startswith("/"):
            value = str(_container_path(rootfs, value))
        env[key] = value
    for secret in svc.get("secrets", []):
        source = project / compose["secrets"][secret]["file"]
        # /run/secrets/<name> is read as SENDPIPE_<NAME> (settings.py); set the variable instead.
        env[secret.upper()] = source.read_text()

    (entrypoint,) = (json.loads(a) for a in _instr("ENTRYPOINT"))
    (default_cmd,) = (json.loads(a) for a in _instr("CMD"))
    argv = [*entrypoint, *svc.get("command", default_cmd)]
    assert argv[0] == "sendpipe"
    argv = [SENDPIPE, *(str(_container_path(rootfs, a)) if a.startswith("/") else a for a in argv[1:])]
    return Service(name, rootfs, env, argv)


def _demo_init(compose: dict[str, Any], project: Path) -> None:
    """Run the demo-init service's command as compose would, into the project's ./demo."""
    init = _service(compose, "demo-init", project, project.parent, amqp_url=None)
    for _ in range(2):  # the second `up` keeps the demo and still succeeds
        done = subprocess.run(init.argv, env=init.env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
    assert (project / "demo/config/sendpipe.toml").is_file()


class ServiceProcess(Worker):
    """conftest's Worker, but running the service's own command line."""

    def __init__(self, service: Service, log_path: Path) -> None:
        super().__init__(service.env, log_path)
        self.argv = service.argv

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compose project directory, with ./demo written by the demo-init service (read-only after)."""
    project = tmp_path_factory.mktemp("compose") / "project"
    (project / "demo").mkdir(parents=True)
    _demo_init(_compose(), project)
    return project


@pytest.fixture
def started(tmp_path: Path) -> Any:
    procs: list[ServiceProcess] = []

    def start(service: Service) -> ServiceProcess:
        proc = ServiceProcess(service, tmp_path / f"{service.name}.log").start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def test_each_service_sees_only_its_own_store(project: Path, tmp_path: Path) -> None:
    compose = _compose()
    runs = {}
    for name, (account, _) in WORKERS.items():
        svc = _service(compose, name, project, tmp_path, amqp_url="amqp://unused/")
        other = next(a for a, _ in WORKERS.values() if a != account)
        assert (Path(svc.env["SENDPIPE_STORE_ROOT"]) / account / "personal").is_dir()
        assert not (Path(svc.env["SENDPIPE_STORE_ROOT"]) / other).exists()
        assert not (svc.rootfs / "demo").exists()
        if name != "audithost":  # `sendpipe check` as that service, told to open the other account's store
            stray = {**svc.env, "SENDPIPE_SERVICE_ACCOUNT": other}
            runs[name] = subprocess.Popen([SENDPIPE, "check"], env=stray, stderr=subprocess.PIPE)
    for name, proc in runs.items():
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, name
        assert b"store-not-found" in err, err


async def test_compose_workers_deliver_what_partners_can_open(
    vhost: str, client: Client, project: Path, started: Any, tmp_path: Path
) -> None:
    compose = _compose()
    # The partners' side first, as compose orders it (twice: a second `up` must also succeed).
    mailbox = _service(compose, "partner-mailbox", project, tmp_path, vhost)
    for _ in range(2):
        done = subprocess.run(mailbox.argv, env=mailbox.env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    procs = {name: started(_service(compose, name, project, tmp_path, vhost)) for name in WORKERS}
    for proc in procs.values():
        proc.wait_for("consumer.started", timeout_s=20)
    sent: dict[str, tuple[str, bytes]] = {}
    for i in range(4):
        for port in ("FabrikamOrders", "NorthwindInvoices"):
            sent[f"{port}-{i}"] = (port, b"%s #%d\r\n\x00\xff" % (port.encode(), i))
    sent["AuditCopy-0"] = ("AuditCopy", b"audit line\n")
    for mid, (port, body) in sent.items():
        await client.publish(port, body, message_id=mid)
    # Each partner's mailbox holds exactly that partner's messages; nothing was suspended or retried.
    got = {}
    for queue, partner_of in (
        ("fabrikam", "FabrikamOrders"),
        ("northwind", "NorthwindInvoices"),
        ("audit", "AuditCopy"),
    ):
        count = sum(1 for port, _ in sent.values() if port == partner_of)
        for msg in await client.drain(f"demo.partner.{queue}", count, timeout_s=20):
            assert msg.headers["sendpipe-send-port"] == partner_of
            got[msg.message_id] = msg
    assert set(got) == set(sent)
    for host in ("SendHost", "AuditHost"):
        assert await client.count(f"sendpipe.suspended.{host}") == 0
    assert not any(proc.events("message.retry_scheduled") for proc in procs.values())

    demo = project / "demo"
    accounts: dict[str, set[str]] = {"SendHost": set(), "AuditHost": set()}
    for mid, (port, body) in sent.items():
        msg = got[mid]
        host, partner = PORTS[port]
        keys = {}
        if partner is not None:
            keys = {"recip_cert": demo / f"partners/{partner}.pem", "recip_key": demo / f"partners/{partner}.key"}
        result = unwrap(msg.body, tmp_path / "unwrap" / mid, ca_pem=demo / "ca/ca.pem", **keys)
        assert result.payload == body
        assert result.signer_thumbprint == msg.headers["sendpipe-signer-thumbprint"]
        assert msg.headers["sendpipe-host"] == host
        accounts[host].add(str(msg.headers["sendpipe-service-account"]))
    assert accounts == {"SendHost": {"svc-biztalk-a", "svc-biztalk-b"}, "AuditHost": {"svc-biztalk-a"}}
    for proc in procs.values():
        proc.signal()
    for name, proc in procs.items():
        assert proc.wait(30) == 0, name


async def test_worker_healthcheck_passes_while_it_runs(vhost: str, project: Path, started: Any, tmp_path: Path) -> None:
    compose = _compose()
    svc = _service(compose, "sendhost-a", project, tmp_path, vhost)
    svc.env["SENDPIPE_HEALTH_MAX_AGE_S"] = "3"  # test only: heartbeat every 1 s instead of every 10 s
    started(svc).wait_for("consumer.started", timeout_s=20)
    test = compose["services"]["sendhost-a"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "sendpipe"
    argv = [SENDPIPE, *test[2:]]
    deadline = time.monotonic() + 10
    while True:
        done = subprocess.run(argv, env=svc.env, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("healthy: ready")  # asked of the instance's listener
    live = subprocess.run(
        [SENDPIPE, "health", "--live"], env=svc.env, capture_output=True, text=True, timeout=30, check=False
    )
    assert live.returncode == 0, live.stdout
    # The image's SENDPIPE_HEALTH_FILE, in the tmpfs: the first heartbeat comes one interval (max age / 3)
    # after the supervisor starts, which may be after consumer.started and the two probes above.
    heartbeat = svc.rootfs / "tmp/sendpipe.health"
    deadline = time.monotonic() + 5
    while not heartbeat.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert heartbeat.exists()
