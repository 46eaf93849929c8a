"""Per-link counts at the edge: hits and body bytes per token for GETs answered 200 or 206,
added once a second to the pending hash of `shared.link_stats` (the worker folds it into
PostgreSQL). Exact over two workers; HEAD, 304 and errors do not count; EDGE_LINK_STATS=false
turns it off."""

from __future__ import annotations

import aiohttp

from shared import link_stats
from shared import metrics as buckets
from shared.resources import Resources
from shared.token_cache import now_ms
from tests.conftest import Stack
from tests.helpers import (
    OwnRedis,
    Public,
    edge_workers,
    get,
    gets_over_workers,
    mp4,
    own_edge,
    png,
    share,
    until,
)


async def reported(r: OwnRedis, n: int) -> bool:
    """Whether the edge has written n requests to the per-minute buckets (in the same
    pipelines as the per-link counts: once all are there, so are the link counts)."""
    total = 0
    for fields in (await buckets.read(r.client, minutes=2)).values():
        total += fields.get("edge.latency_ms.le_inf", 0)
    return total == n


async def not_counted(edge_url: str, p: Public) -> int:
    """Requests that reach a live token but must not count as hits; how many were made."""
    _, h, _ = await get(edge_url, "HEAD")
    answers = [
        await get(edge_url, "HEAD"),
        await get(edge_url, **{"If-None-Match": h["ETag"]}),  # 304
        await get(edge_url, Range="bytes=999999999-"),  # 416
        await get(edge_url + "x"),  # 404: another name
        await get(edge_url, "POST"),  # 405
    ]
    assert [a[0] for a in answers] == [200, 304, 416, 404, 405]
    return len(answers) + 1


async def test_per_link_counts_are_exact_over_two_workers(
    stack: Stack, api: aiohttp.ClientSession, res: Resources, own_redis: OwnRedis
) -> None:
    small = await share(api, png(5000))  # served from memory
    large = await share(api, mp4(1024 * 1024), "v.mp4")  # from S3, then from the disk cache
    for p in (small, large):
        await own_redis.copy_token(res, p.token)
    with own_edge(stack, workers=2, REDIS_URL=own_redis.url) as edge:
        await until(lambda: len(edge_workers(edge)) == 2, "two listening workers")
        started_ms = now_ms()
        expected = await gets_over_workers(edge, [large, small], 80)
        made = 80
        for p in (small, large):
            made += await not_counted(edge.public(p), p)

        await until(lambda: reported(own_redis, made), "every request reported")
        pending = await own_redis.client.hgetall(link_stats.PENDING_KEY)
        counted = {c.token: [c.hits, c.bytes] for c in link_stats.parse(pending)}
        assert counted == expected
        last = {c.token: c.last_ms for c in link_stats.parse(pending)}
        assert all(t is not None and started_ms - 1000 <= t <= now_ms() for t in last.values())
        assert (
            0 < await own_redis.client.ttl(link_stats.PENDING_KEY) <= link_stats.PENDING_TTL_SECONDS
        )
        served_by = {e["process"] for e in edge.access() if e["status"] in (200, 206)}
        assert served_by == {"edge-0", "edge-1"}  # the counts were spread over both


async def test_link_stats_can_be_turned_off(
    stack: Stack, api: aiohttp.ClientSession, res: Resources, own_redis: OwnRedis
) -> None:
    p = await share(api, png(2000))
    await own_redis.copy_token(res, p.token)
    with own_edge(stack, REDIS_URL=own_redis.url, EDGE_LINK_STATS="false") as edge:
        for _ in range(5):
            assert (await get(edge.public(p)))[0] == 200
        await until(lambda: reported(own_redis, 5), "the requests reported")
        assert not await own_redis.client.exists(link_stats.PENDING_KEY)
