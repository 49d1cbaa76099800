"""Per-instance counters for the periodic `stats` log line and the health check."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

_WINDOW = 4096  # durations kept for mean / p99


class Stats:
    """Counts outcomes and keeps recent durations; touched only from the event loop thread."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {"delivered": 0, "suspended": 0, "retried": 0, "unsettled": 0}
        self.in_flight = 0
        self.durations: deque[float] = deque(maxlen=_WINDOW)
        self.since = time.monotonic()
        self.last_activity = time.monotonic()
        self._last_total = 0

    def started(self) -> None:
        self.in_flight += 1
        self.last_activity = time.monotonic()

    def finished(self, event: str | None, duration_ms: float) -> None:
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
