"""The container test's engine and deployment: set up (or reuse) the private engine and stand-in images, build
the project's image, bring docker-compose.yml up; and at the end, also after a failure, remove every container,
volume, network and the image built here, then stop the engine (the cached stand-in base images stay)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest
from containers.deployment import TIMINGS, UID, WORKERS, Deployment, ports_free, script, timed


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> Iterator[None]:
    """The private dockerd with Compose v2 and the stand-ins; no engine is a failure, never a skip."""
    t0 = time.monotonic()
    try:
        script("setup", timeout_s=900)  # from nothing: packages, debootstrap, images (printed timings)
        timed("engine setup (engine, Compose, stand-in images)", t0)
        t1 = time.monotonic()
        script("build", timeout_s=600)
        timed("docker build (sendpipe:local)", t1)
        yield
    finally:
        t2 = time.monotonic()
        script("stop", timeout_s=300)  # containers, volumes, networks, sendpipe:local, the engine
        timed("teardown (containers, image, engine)", t2)
        _report(request.config)


def _report(config: pytest.Config) -> None:
    """The timings on the terminal (past output capture: this runs in the last test's teardown)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for label, seconds in TIMINGS.items():
            reporter.write_line(f"container test: {label}: {seconds:.1f} s")


@pytest.fixture(scope="module")
def deployment(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The README's container steps as root: ./demo made by you and given to a non-root uid, demo-init, up."""
    ports_free()
    project = tmp_path_factory.mktemp("compose-project")
    dep = Deployment(project)
    dep.demo.mkdir()
    shutil.chown(dep.demo, UID, UID)  # as root: the README's `chown 10001:10001 demo`, then the uid from stat
    dep.env["SENDPIPE_UID"], dep.env["SENDPIPE_GID"] = str(dep.demo.stat().st_uid), str(dep.demo.stat().st_gid)
    try:
        t0 = time.monotonic()
        dep.init_output = dep.compose("run", "--rm", "demo-init").stdout
        timed("demo-init", t0)
        t1 = time.monotonic()
        dep.compose("up", "-d")
        dep.wait_healthy(["rabbitmq", *WORKERS], timeout_s=120)
        timed("up -d until every service is healthy", t1)
        yield dep
    finally:
        dep.compose("down", "-v", "--remove-orphans", check=False, timeout_s=180)
