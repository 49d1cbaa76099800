"""`sendpipe health`: the container probe (fresh heartbeat file = consumer alive)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from worker import settings
from worker.errors import Code, ConfigError
from worker.settings import InstanceSettings


def register(sub: Any) -> None:
    """Add `health` to the `sendpipe` parser."""
    hlt = sub.add_parser(
        "health",
        help="Exit 0 if this instance's consumer is alive (fresh heartbeat file).",
        description="Exit 0 if this instance's consumer is alive: the heartbeat file "
        "(SENDPIPE_HEALTH_FILE) was touched within SENDPIPE_HEALTH_MAX_AGE_S; else exit 1.",
    )
    hlt.set_defaults(func=cmd_health)


def cmd_health(args: argparse.Namespace) -> int:
    inst = settings.load(InstanceSettings)
    if inst.health_file is None:
        raise ConfigError("SENDPIPE_HEALTH_FILE is not set: no heartbeat to check", code=Code.SETTINGS_INVALID)
    try:
        age = time.time() - inst.health_file.stat().st_mtime
    except FileNotFoundError:
        print(f"unhealthy: no heartbeat at {inst.health_file} (consumer never started)")
        return 1
    if age > inst.health_max_age_s:
        print(f"unhealthy: heartbeat {age:.0f}s old (max {inst.health_max_age_s:.0f}s): consumer not running")
        return 1
    print(f"healthy: heartbeat {age:.1f}s old")
    return 0
