"""Edge counters: counted in process memory per request, written to Redis once a second.

Each process adds its counts to the shared per-minute buckets (`shared.metrics.add`, one
pipeline a second), so dashboards sum every replica. Fields: `edge.requests.<status>`,
`edge.bytes` (body bytes sent), `edge.cache.memory_hits|disk_hits|misses`, and the latency
histogram `edge.latency_ms.le_<bound>` (cumulative, as Prometheus buckets are). Counting is
a few dict increments; a Redis outage drops the second's counts (memory never grows) and
the number of requests dropped is added as `edge.metrics.dropped` once Redis is back.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from shared import metrics as buckets

log = structlog.get_logger(__name__)

BOUNDS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
_LE = (*(f"edge.latency_ms.le_{b}" for b in BOUNDS_MS), "edge.latency_ms.le_inf")
_CACHE = {
    "memory": "edge.cache.memory_hits",
    "disk": "edge.cache.disk_hits",
    "miss": "edge.cache.misses",
}
_FLUSH_EVERY = 1.0


class EdgeMetrics:
    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._latency = [0] * len(_LE)  # per bucket, made cumulative when written
        self._requests = 0
        self._status_keys: dict[int, str] = {}
        self.totals: dict[str, int] = {}  # since start, for GET /metrics
        self.latency_sum_ms = 0.0  # since start, for GET /metrics (not in Redis)
        self.dropped = 0

    def record(self, status: int, sent: int, cache: str | None, started: float) -> None:
        """Count one finished request (the hot path: a few dict operations).

        `cache` is "memory", "disk" or "miss" when content was sent; `started` is the
        request's `time.perf_counter()`.
        """
        c = self._counts
        key = self._status_keys.get(status)
        if key is None:
            key = self._status_keys[status] = f"edge.requests.{status}"
        c[key] = c.get(key, 0) + 1
        if sent:
            c["edge.bytes"] = c.get("edge.bytes", 0) + sent
        if cache is not None:
            name = _CACHE[cache]
            c[name] = c.get(name, 0) + 1
        ms = (time.perf_counter() - started) * 1000.0
        self.latency_sum_ms += ms
        self._latency[bisect.bisect_left(BOUNDS_MS, ms)] += 1
        self._requests += 1

    def take(self) -> tuple[dict[str, int], int]:
        """This second's counts (latency cumulative) and how many requests they cover."""
        counts, self._counts = self._counts, {}
        latency, self._latency = self._latency, [0] * len(_LE)
        requests, self._requests = self._requests, 0
        counts.update(_cumulative(latency))
        for name, n in counts.items():
            self.totals[name] = self.totals.get(name, 0) + n
        return counts, requests

    def current(self) -> dict[str, int]:
        """Totals since start, including what the next flush has not taken yet."""
        now = dict(self.totals)
        for name, n in (*self._counts.items(), *_cumulative(self._latency).items()):
            now[name] = now.get(name, 0) + n
        return now

    async def flush(self, redis: aioredis.Redis, retention: int, redis_wait: float) -> None:
        counts, requests = self.take()
        if self.dropped:
            counts["edge.metrics.dropped"] = self.dropped
        if not counts:
            return
        try:
            async with asyncio.timeout(redis_wait):
                await buckets.add(redis, counts, retention)
        except (RedisError, OSError, TimeoutError) as exc:
            if not self.dropped:
                log.warning("edge metrics not written; dropping them", error=str(exc))
            self.dropped += requests
            return
        self.dropped = 0

    async def run(self, redis: aioredis.Redis, retention: int, redis_wait: float) -> None:
        """Write once a second until cancelled; the caller flushes one last time."""
        while True:
            await asyncio.sleep(_FLUSH_EVERY)
            await self.flush(redis, retention, redis_wait)


def _cumulative(latency: list[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    running = 0
    for name, n in zip(_LE, latency, strict=True):
        running += n
        if running:
            out[name] = running
    return out


def prometheus(metrics: EdgeMetrics, gauges: dict[str, float]) -> bytes:
    """This process's totals in Prometheus text format (each process answers for itself)."""
    totals = metrics.current()
    lines: list[str] = []

    def family(name: str, kind: str, help_: str) -> Callable[[str, float], None]:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        return lambda labels, v: lines.append(f"{name}{labels} {v:g}")

    status = family("filecdn_edge_requests_total", "counter", "Requests answered, by status")
    for key, n in sorted(totals.items()):
        if key.startswith("edge.requests."):
            status(f'{{status="{key.rsplit(".", 1)[1]}"}}', n)
    family("filecdn_edge_bytes_total", "counter", "Body bytes sent")(
        "", totals.get("edge.bytes", 0)
    )
    cache = family("filecdn_edge_cache_total", "counter", "Content served, by source")
    for source, key in _CACHE.items():
        cache(f'{{source="{source}"}}', totals.get(key, 0))
    hist = family("filecdn_edge_latency_ms", "histogram", "Time to answer, in milliseconds")
    for bound, key in zip((*BOUNDS_MS, "+Inf"), _LE, strict=True):
        hist(f'_bucket{{le="{bound}"}}', totals.get(key, 0))
    hist("_sum", metrics.latency_sum_ms)
    hist("_count", totals.get(_LE[-1], 0))
    for name, value in gauges.items():
        family(f"filecdn_edge_{name}", "gauge", name.replace("_", " "))("", value)
    return ("\n".join(lines) + "\n").encode()
