"""Operational counters: per-minute buckets in Redis (for dashboards across replicas)
and Prometheus counters per process.

A bucket is one Redis hash per minute, `filecdn:metrics:<unix minute start>`, field =
metric name. Counting never fails a request: domain events are counted after commit by the
unit of work (`shared/unit_of_work.py`), which logs and drops a Redis error; hot paths (every
API request) count in memory and add to the bucket once a second (`Tally`).

Fields are counters (summed over replicas) except `state.*`: samples of a level (queue
depth, pending events, active URLs) that the worker writes once a minute with HSET.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import prometheus_client
import redis.asyncio as aioredis
import structlog
from prometheus_client import Counter
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from shared.series import STATE_PREFIX

if TYPE_CHECKING:
    from shared.resources import Resources

log = structlog.get_logger(__name__)

BUCKET_PREFIX = "filecdn:metrics:"
_READ_CHUNK = 1000  # buckets per pipeline when reading a long window

EVENTS = Counter(
    "filecdn_events_total", "Domain events (uploads, URL changes, deletions)", ["event"]
)


PROMETHEUS_HEADERS = {
    "Content-Type": prometheus_client.CONTENT_TYPE_LATEST,
    "Cache-Control": "no-store",
}


def prometheus_text(*registries: prometheus_client.CollectorRegistry) -> bytes:
    """This process's Prometheus registry, then `registries` (collectors an app builds)."""
    return b"".join(
        prometheus_client.generate_latest(r) for r in (prometheus_client.REGISTRY, *registries)
    )


def bucket_key(at: float | None = None) -> str:
    minute = int(at if at is not None else time.time()) // 60 * 60
    return f"{BUCKET_PREFIX}{minute}"


async def add(
    redis: aioredis.Redis, counts: Mapping[str, int], retention: int, at: float | None = None
) -> None:
    """Add counts to the current minute's bucket in one round trip."""
    pipe = redis.pipeline(transaction=False)
    add_to_pipeline(pipe, counts, retention, at)
    await pipe.execute()


def add_to_pipeline(
    pipe: Pipeline, counts: Mapping[str, int], retention: int, at: float | None = None
) -> None:
    """Queue adding counts to the current minute's bucket on a pipeline the caller executes."""
    if not counts:
        return
    key = bucket_key(at)
    for name, n in counts.items():
        pipe.hincrby(key, name, n)
    pipe.expire(key, retention)


async def count(res: Resources, name: str, n: int = 1) -> None:
    """Count a domain event in this process and in the minute's bucket (RedisError if not)."""
    EVENTS.labels(name).inc(n)
    await add(res.redis, {name: n}, res.settings.metrics_retention_seconds)


async def set_state(
    redis: aioredis.Redis, values: Mapping[str, int], retention: int, at: float | None = None
) -> None:
    """Record sampled levels (`state.*` fields) in the minute's bucket: the last write wins."""
    key = bucket_key(at)
    pipe = redis.pipeline(transaction=False)
    pipe.hset(key, mapping={f"{STATE_PREFIX}{k}": v for k, v in values.items()})
    pipe.expire(key, retention)
    await pipe.execute()


def minute_starts(minutes: int, now: float | None = None) -> list[int]:
    """The starts of the last `minutes` minutes, oldest first, the current one last."""
    current = int(now if now is not None else time.time()) // 60 * 60
    return [current - 60 * i for i in range(minutes - 1, -1, -1)]


async def read_minutes(redis: aioredis.Redis, starts: Sequence[int]) -> dict[int, dict[str, int]]:
    """The buckets of these minutes that exist: {minute start: {name: count}}."""
    out: dict[int, dict[str, int]] = {}
    for i in range(0, len(starts), _READ_CHUNK):
        chunk = starts[i : i + _READ_CHUNK]
        pipe = redis.pipeline(transaction=False)
        for s in chunk:
            pipe.hgetall(f"{BUCKET_PREFIX}{s}")
        for s, raw in zip(chunk, await pipe.execute(), strict=True):
            if raw:
                out[s] = {k.decode(): int(v) for k, v in raw.items()}
    return out


async def read(redis: aioredis.Redis, minutes: int = 60) -> dict[int, dict[str, int]]:
    """The last `minutes` buckets that exist: {minute start: {name: count}}."""
    return await read_minutes(redis, minute_starts(minutes))


class Tally:
    """Counts made on a hot path: a dict increment now, added to the minute's bucket once a
    second in one pipeline. A failed write drops that second's counts (memory stays bounded)
    and logs once until writes work again."""

    FLUSH_EVERY = 1.0

    def __init__(self, redis: aioredis.Redis, retention: int) -> None:
        self._redis = redis
        self._retention = retention
        self._counts: dict[str, int] = {}
        self._failing = False

    def add(self, name: str, n: int = 1) -> None:
        self._counts[name] = self._counts.get(name, 0) + n

    async def flush(self) -> None:
        counts, self._counts = self._counts, {}
        if not counts:
            return
        try:
            await add(self._redis, counts, self._retention)
        except (RedisError, OSError) as exc:
            if not self._failing:
                log.warning("counts not written to Redis; dropping them", error=str(exc))
            self._failing = True
            return
        self._failing = False

    async def run(self) -> None:
        """Flush once a second until cancelled (the owner flushes once more after)."""
        while True:
            await asyncio.sleep(self.FLUSH_EVERY)
            await self.flush()
