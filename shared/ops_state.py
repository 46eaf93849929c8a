"""What the system is doing now, read from Redis and PostgreSQL: the job queue, the event
stream, the last reconcile pass, public URLs against their quota, the busiest links.

The ops listener reads it for the dashboard's JSON and its Prometheus gauges; the worker
samples some of it into the per-minute buckets once a minute (`shared.metrics.set_state`),
so that the dashboard can chart levels too. It also holds the contract of the reconcile
record the worker writes (`filecdn:reconcile:last`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared import events

RECONCILE_KEY = "filecdn:reconcile:last"


@dataclass(frozen=True, slots=True)
class QueueState:
    depth: int  # jobs in arq's queue (deferred ones included)
    overdue: int  # jobs whose time has come (running ones included)
    oldest_overdue_seconds: float  # how late the most overdue job is; 0 when none is


async def queue(redis: aioredis.Redis, queue_name: str) -> QueueState:
    now_ms = time.time() * 1000
    pipe = redis.pipeline(transaction=False)
    pipe.zcard(queue_name)
    pipe.zcount(queue_name, "-inf", now_ms)
    pipe.zrangebyscore(queue_name, "-inf", now_ms, start=0, num=1, withscores=True)
    depth, overdue, oldest = await pipe.execute()
    lag = max(0.0, (now_ms - float(oldest[0][1])) / 1000) if oldest else 0.0
    return QueueState(int(depth), int(overdue), round(lag, 3))


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    pending: int
    idle_seconds: float


@dataclass(frozen=True, slots=True)
class StreamState:
    length: int  # entries kept in the stream
    pending: int  # delivered to a consumer, not yet acknowledged
    oldest_pending_seconds: float | None  # since the oldest pending event was published
    undelivered: int | None  # not yet delivered to any consumer (Redis 7+)
    consumers: list[Consumer] = field(default_factory=list)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def stream(redis: aioredis.Redis) -> StreamState:
    """The `filecdn:events` stream and its consumer group, as XPENDING and XINFO see them."""
    length = int(await redis.xlen(events.STREAM))
    try:
        summary = await redis.xpending(events.STREAM, events.GROUP)
        groups = await redis.xinfo_groups(events.STREAM)
        consumers = await redis.xinfo_consumers(events.STREAM, events.GROUP)
    except ResponseError:  # no stream or no group yet: nothing is pending
        return StreamState(length, 0, None, None)
    oldest = None
    if summary["pending"] and summary["min"]:
        published_ms = int(_text(summary["min"]).split("-")[0])
        oldest = round(max(0.0, time.time() - published_ms / 1000), 3)
    ours = [g for g in groups if _text(g["name"]) == events.GROUP]
    lag = ours[0].get("lag") if ours else None
    return StreamState(
        length,
        int(summary["pending"]),
        oldest,
        int(lag) if lag is not None else None,
        [
            Consumer(_text(c["name"]), int(c["pending"]), round(int(c["idle"]) / 1000, 1))
            for c in consumers
        ],
    )


async def record_reconcile(
    redis: aioredis.Redis,
    *,
    worker: str,
    seconds: float,
    full: bool = False,
    fixed: dict[str, int] | None = None,
    error: str | None = None,
) -> None:
    """What the last reconcile pass did (or why it failed), for the dashboard."""
    now = round(time.time(), 3)
    record: dict[str, str | float] = {
        "at": now,
        "ok": "0" if error else "1",
        "worker": worker,
        "seconds": round(seconds, 3),
        "full": "1" if full else "0",
    }
    if error is None:
        record |= {"ok_at": now, "fixed": json.dumps(fixed or {}, sort_keys=True), "error": ""}
    else:
        record |= {"failed_at": now, "error": error[:300]}
    pipe = redis.pipeline(transaction=False)
    pipe.hset(RECONCILE_KEY, mapping=record)
    await pipe.execute()


async def last_reconcile(redis: aioredis.Redis) -> dict[str, Any] | None:
    """The last pass: when, by which worker, how long, what it fixed; None if none ran."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(RECONCILE_KEY)
    (found,) = await pipe.execute()
    raw = {_text(k): _text(v) for k, v in found.items()}
    if not raw:
        return None

    def number(name: str) -> float | None:
        return float(raw[name]) if raw.get(name) else None

    return {
        "at": number("at"),
        "ok": raw.get("ok") == "1",
        "worker": raw.get("worker"),
        "seconds": number("seconds"),
        "full": raw.get("full") == "1",
        "fixed": json.loads(raw["fixed"]) if raw.get("fixed") else {},
        "last_ok_at": number("ok_at"),
        "last_failed_at": number("failed_at"),
        "error": raw.get("error") or None,
    }


async def active_urls(db: asyncpg.Pool) -> int:
    """Public URLs that work now (in every team)."""
    return int(
        await db.fetchval(
            """SELECT count(*) FROM public_urls
                WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"""
        )
    )


@dataclass(frozen=True, slots=True)
class TeamUsage:
    team: str
    active: int
    quota: int
    ratio: float | None


async def teams_nearest_quota(db: asyncpg.Pool, quota: int, limit: int = 5) -> list[TeamUsage]:
    """The teams with the most live public URLs, against the per-team quota."""
    rows = await db.fetch(
        """SELECT t.name, c.active
              FROM (SELECT team_id, count(*) AS active FROM public_urls
                     WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
                     GROUP BY team_id
                     ORDER BY active DESC, team_id LIMIT $1) c
              JOIN teams t ON t.id = c.team_id
             ORDER BY c.active DESC, t.name""",
        limit,
    )
    return [
        TeamUsage(r["name"], r["active"], quota, round(r["active"] / quota, 4) if quota else None)
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Link:
    team: str
    file_id: str
    filename: str
    token_prefix: str  # 4 characters: enough to find it in the edge's log, not to open it
    hits: int
    bytes: int
    live: bool


async def top_links(db: asyncpg.Pool, since: datetime, limit: int = 10) -> list[Link]:
    """The links opened most since `since` (`public_url_minutes`, folded by the worker)."""
    rows = await db.fetch(
        """SELECT t.name AS team, u.file_id, f.filename, left(u.token, 4) AS token_prefix,
                   m.hits, m.bytes,
                   (u.revoked_at IS NULL AND (u.expires_at IS NULL OR u.expires_at > now()))
                     AS live
              FROM (SELECT url_id, sum(hits)::bigint AS hits, sum(bytes)::bigint AS bytes
                      FROM public_url_minutes WHERE minute >= $1
                     GROUP BY url_id ORDER BY hits DESC, url_id LIMIT $2) m
              JOIN public_urls u ON u.id = m.url_id
              JOIN files f ON f.id = u.file_id
              JOIN teams t ON t.id = u.team_id
             ORDER BY m.hits DESC, u.id""",
        since,
        limit,
    )
    return [Link(**dict(r)) for r in rows]


def as_json(value: Any) -> Any:
    """A state dataclass (or a list of them) as plain JSON values."""
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return asdict(value)
