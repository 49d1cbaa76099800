"""Per-instance counters: the periodic `stats` log line, the health check and the Prometheus metrics."""

from __future__ import annotations

import bisect
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from worker.errors import Code

_WINDOW = 4096  # durations kept for mean / p99
# sendpipe_message_duration_seconds buckets (upper bounds, seconds): from a small message encoded on the loop
# (~1 ms) to a 64 MiB one behind a slow confirm; +Inf is implicit.
DURATION_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The outcome log events (SPEC "Guarantees") and their `outcome` label (SPEC "Metrics").
OUTCOMES = {
    "message.delivered": "delivered",
    "message.retry_scheduled": "retry_scheduled",
    "message.suspended": "suspended",
}
_CODES = frozenset(str(c) for c in Code)
MAX_PORT_LABELS = 256  # without a port filter: distinct send_port label values kept, the rest are "_other"
OTHER_PORT = "_other"


class Stats:
    """Counts outcomes and keeps recent durations; touched only from the event loop thread."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {"delivered": 0, "suspended": 0, "retried": 0, "unsettled": 0}
        self.in_flight = 0
        self.durations: deque[float] = deque(maxlen=_WINDOW)
        self.since = time.monotonic()
        self.last_activity = time.monotonic()
        self._last_total = 0
        # Prometheus: (send_port, outcome, error_code) -> count, and the duration histogram.
        self.outcomes: Counter[tuple[str, str, str]] = Counter()
        self.bucket_counts = [0] * (len(DURATION_BUCKETS_S) + 1)  # per bucket, the last one is +Inf
        self.duration_sum_s = 0.0
        # Maps a message's send port to its label value: a producer picks routing keys, so only configured
        # ports may become label values (the metrics wiring sets this); the default caps the distinct values.
        self.port_label: Callable[[str], str] = self._capped_port

    def started(self) -> None:
        self.in_flight += 1
        self.last_activity = time.monotonic()

    def finished(
        self, event: str | None, duration_ms: float, *, send_port: str | None = None, error_code: str | None = None
    ) -> None:
        """One message settled (``event`` = its outcome log event) or given up unsettled (None)."""
        self.in_flight -= 1
        self.last_activity = time.monotonic()
        key = {
            "message.delivered": "delivered",
            "message.suspended": "suspended",
            "message.retry_scheduled": "retried",
        }.get(event or "", "unsettled")
        self.counts[key] += 1
        if event is not None:
            self.durations.append(duration_ms)
        outcome = OUTCOMES.get(event or "")
        if outcome is None:
            return
        code = "" if outcome == "delivered" else (error_code if error_code in _CODES else str(Code.INTERNAL_ERROR))
        self.outcomes[(self.port_label(send_port or ""), outcome, code)] += 1
        seconds = duration_ms / 1000
        self.bucket_counts[bisect.bisect_left(DURATION_BUCKETS_S, seconds)] += 1
        self.duration_sum_s += seconds

    def _capped_port(self, port: str) -> str:
        if len({p for p, _, _ in self.outcomes}) < MAX_PORT_LABELS or any(p == port for p, _, _ in self.outcomes):
            return port
        return OTHER_PORT

    def totals(self) -> dict[str, int]:
        return {**self.counts, "in_flight": self.in_flight}

    def snapshot(self) -> dict[str, Any]:
        """Totals, the rate since the last snapshot, and mean / p99 duration of recent messages."""
        now = time.monotonic()
        total = sum(v for k, v in self.counts.items() if k != "unsettled")
        elapsed = max(now - self.since, 1e-9)
        rate = (total - self._last_total) / elapsed
        self.since, self._last_total = now, total
        ordered = sorted(self.durations)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0
        mean = sum(ordered) / len(ordered) if ordered else 0.0
        return {**self.totals(), "rate_per_s": round(rate, 2), "mean_ms": round(mean, 2), "p99_ms": round(p99, 2)}
