"""The README's main command (`make run`), run briefly: a demo, two instances, samples verified by OpenSSL."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_run_shows_verified_deliveries_and_stops_cleanly(vhost: str, tmp_path: Path) -> None:
    """On each broker: on 4.3 (transient non-exclusive queues refused by default) this also proves the
    quickstart's partner mailbox is a queue RabbitMQ 4 accepts."""
    demo = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENDPIPE_")}
    env["SENDPIPE_AMQP_URL"] = vhost
    done = subprocess.run(
        ["make", "--no-print-directory", "run", f"ARGS=--demo {demo} --seconds 2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert (demo / "config/sendpipe.toml").exists()  # written by `sendpipe demo init` on first run
    verified = [line for line in out.splitlines() if line.strip().startswith("verified ")]
    assert len(verified) == 3, out
    assert all("identical to the sample" in line and "openssl cms -decrypt/-verify OK" in line for line in verified)
    assert {line.split(" by ")[1].split(":")[0] for line in verified} <= {"svc-biztalk-a", "svc-biztalk-b"}
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {"delivered": 3, "verified_with_openssl": 3, "failed": 0}
    for account in ("svc-biztalk-a", "svc-biztalk-b"):
        log = (demo / "logs" / f"{account}.log").read_text()
        assert '"consumer.started"' in log and '"instance.stopped"' in log  # both ran and stopped cleanly
