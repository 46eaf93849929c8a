"""Once a second, one Redis pipeline: the per-minute counters and the per-link counts.

Per-minute buckets (`shared.metrics`, `filecdn:metrics:<minute>`) get what this process
counted since its last report, so dashboards sum every process of every replica. Fields:

- `edge.requests.<status>` (the bounded set of `cdn_edge.metrics.STATUSES`, else `other`)
- `edge.bytes` (body bytes sent), `edge.cache.memory_hits|disk_hits|misses`
- `edge.latency_ms.le_<ms>` and `edge.latency_ms.le_inf` (cumulative, like Prometheus)
- `edge.origin.requests`, `edge.origin.bytes` (GETs sent to S3, body bytes read from it)
- `edge.metrics.dropped`, `edge.links.dropped`: requests (hits) whose counts an earlier
  report could not write, added once Redis takes writes again.

Per-link counts go to `shared.link_stats`'s pending hash in the same pipeline. A failed
pipeline is not retried (it may have been partly applied: a retry could count twice); what
it carried is counted as dropped instead, so no count is lost without a trace and memory
never grows while Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from cdn_edge import metrics as m
from cdn_edge.links import LinkCounts
from shared import link_stats
from shared import metrics as buckets
from shared.token_cache import now_ms

log = structlog.get_logger(__name__)

REPORT_EVERY = 1.0  # seconds

_FIELDS: list[tuple[int, str]] = [
    *((m.REQUESTS + i, f"edge.requests.{s}") for i, s in enumerate((*m.STATUSES, "other"))),
    (m.SENT_BYTES, "edge.bytes"),
    (m.CACHE_INDEX["memory"], "edge.cache.memory_hits"),
    (m.CACHE_INDEX["disk"], "edge.cache.disk_hits"),
    (m.CACHE_INDEX["miss"], "edge.cache.misses"),
    (m.ORIGIN_REQUESTS, "edge.origin.requests"),
    (m.ORIGIN_BYTES, "edge.origin.bytes"),
    (m.METRICS_DROPPED, "edge.metrics.dropped"),
    (m.LINKS_DROPPED, "edge.links.dropped"),
]
_LATENCY_FIELDS = [f"edge.latency_ms.le_{b}" for b in m.BOUNDS_MS] + ["edge.latency_ms.le_inf"]
_DROPPED = (m.METRICS_DROPPED, m.LINKS_DROPPED)


def bucket_fields(delta: list[int]) -> dict[str, int]:
    """Per-minute bucket fields for a difference of two counter snapshots (non-zero only)."""
    fields = {name: delta[i] for i, name in _FIELDS if delta[i]}
    running = 0
    for i, name in enumerate(_LATENCY_FIELDS):
        running += delta[m.LATENCY + i]
        if running:
            fields[name] = running
    return fields


class Reporter:
    """This process's once-a-second writer (and the keeper of its gauges)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        counters: m.Counters,
        *,
        metrics: bool,
        links: LinkCounts | None,
        retention: int,
        timeout: float,
        gauges: Callable[[], None],
        wake: asyncio.Event,
    ) -> None:
        self._redis = redis
        self._counters = counters
        self._metrics = metrics
        self._links = links
        self._retention = retention
        self._timeout = timeout
        self._gauges = gauges
        self._reported = counters.counters()
        self._failing = False
        self._wake = wake  # set to report before the second is up (links full)

    async def run(self) -> None:
        """Report once a second, or sooner when woken, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPORT_EVERY):
                    await self._wake.wait()
            self._wake.clear()
            await self.report()

    async def report(self) -> None:
        self._gauges()
        fields: dict[str, int] = {}
        requests = 0
        before = self._reported
        if self._metrics:
            now = self._counters.counters()
            delta = [a - b for a, b in zip(now, before, strict=True)]
            fields = bucket_fields(delta)
            requests = sum(delta[m.REQUESTS : m.REQUESTS + len(m.STATUSES) + 1])
            self._reported = now
        links = self._links.take() if self._links is not None else {}
        if not fields and not links:
            return
        pipe = self._redis.pipeline(transaction=False)
        buckets.add_to_pipeline(pipe, fields, self._retention)
        link_stats.add_to_pipeline(pipe, links, now_ms())
        try:
            async with asyncio.timeout(self._timeout):
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                log.warning(
                    "edge counters not written to Redis: counted as dropped", error=repr(exc)
                )
            self._failing = True
            slot = self._counters.slot
            slot[m.METRICS_DROPPED] += requests
            slot[m.LINKS_DROPPED] += sum(c.hits for c in links.values())
            for i in _DROPPED:  # earlier drops are reported with the next write that works
                self._reported[i] = before[i]
            return
        if self._failing:
            log.info("edge counters written to Redis again")
        self._failing = False
