"""Operational counters: per-minute buckets in Redis (for dashboards across replicas)
and Prometheus counters per process.

A bucket is one Redis hash per minute, `filecdn:metrics:<unix minute start>`, field =
metric name. Counting never fails a request: domain events are counted after commit by the
unit of work (`shared/unit_of_work.py`), which logs and drops a Redis error.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.asyncio.client import Pipeline

if TYPE_CHECKING:
    from shared.resources import Resources

BUCKET_PREFIX = "filecdn:metrics:"

EVENTS = Counter(
    "filecdn_events_total", "Domain events (uploads, URL changes, deletions)", ["event"]
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


async def read(redis: aioredis.Redis, minutes: int = 60) -> dict[int, dict[str, int]]:
    """The last `minutes` buckets that exist: {minute start: {name: count}}."""
    now = int(time.time()) // 60 * 60
    starts = [now - 60 * i for i in range(minutes)]
    pipe = redis.pipeline(transaction=False)
    for s in starts:
        pipe.hgetall(f"{BUCKET_PREFIX}{s}")
    out: dict[int, dict[str, int]] = {}
    for s, raw in zip(starts, await pipe.execute(), strict=True):
        if raw:
            out[s] = {k.decode(): int(v) for k, v in raw.items()}
    return out
