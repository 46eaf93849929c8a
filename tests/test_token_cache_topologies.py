"""The token cache at scale, on real servers: a 3-shard Redis Cluster, and a primary whose
replica the edge reads (writes wait for it). On each, URLs serve and die through the real
API and edge, reconcile rebuilds the cache after a flush, and no reader sees a 200 after a
revoke or a delete returns."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from cdn_edge.lookups import RedisUnavailable, TokenLookups
from cli.embedded import free_port
from shared import token_cache
from shared.resources import Resources
from shared.token_cache import TokenCache
from tests.conftest import Topology, WorkerHandle
from tests.helpers import (
    call,
    create,
    fetch,
    png,
    race_revocation,
    revoke,
    until_past,
    upload,
    wait_for,
)


@pytest.fixture
async def tokens(topology: Topology) -> AsyncIterator[TokenCache]:
    """The topology's token cache as its writers see it (the cluster, or the primary)."""
    client: token_cache.TokenRedis
    if topology.name == "cluster":
        client = RedisCluster.from_url(topology.primaries[0])
    else:
        client = aioredis.Redis.from_url(topology.primaries[0])
    yield TokenCache(client)
    await client.aclose()


@pytest.fixture
def tworker(topology: Topology) -> Iterator[WorkerHandle]:
    handle = topology.start_worker()
    yield handle
    handle.stop()


def token_of(url: str) -> str:
    return url.split("/")[-2]


async def shard_of(tokens: TokenCache, token: str) -> str:
    """The primary holding the token's entry (the one primary, off a cluster)."""
    if not isinstance(tokens.redis, RedisCluster):
        return "primary"
    await tokens.redis.initialize()
    node = tokens.redis.get_node_from_key(token_cache.key(token))
    assert node is not None
    return str(node.name)


async def share(api: aiohttp.ClientSession, body: dict[str, int] | None = None) -> tuple[str, str]:
    """Upload a PNG and make it public; returns (file id, public URL)."""
    f = await upload(api, png())
    status, made = await create(api, f["id"], body or {})
    assert status == 200, made
    return f["id"], made["public_url"]


async def test_urls_serve_update_and_die_through_the_topologys_token_cache(
    topology: Topology, tapi: aiohttp.ClientSession, tokens: TokenCache, res: Resources
) -> None:
    file_id, url = await share(tapi)
    assert url.startswith(topology.edge_url)
    assert (await fetch(url))[0] == 200  # the edge reads the replica: WAIT put it there
    token = token_of(url)
    [raw] = await tokens.mget([token_cache.key(token)])
    assert raw is not None and len(raw) == 62  # compact
    assert not await res.redis.exists(token_cache.key(token))  # not in REDIS_URL's Redis
    status, updated = await create(tapi, file_id, {"expires_after": 3600})
    assert status == 200 and updated["public_url"] == url
    record = await tokens.get(token)
    assert record is not None and record.deadline_ms is not None
    assert (await fetch(url))[0] == 200
    assert (await revoke(tapi, file_id))[0] == 200
    assert (await fetch(url))[0] == 404
    assert await tokens.get(token) is None
    _, again = await create(tapi, file_id, {})
    assert again["public_url"] != url and (await fetch(again["public_url"]))[0] == 200
    assert (await call(tapi, "DELETE", f"/v1/files/{file_id}"))[0] == 200
    assert (await fetch(again["public_url"]))[0] == 404


async def test_api_and_edge_readiness_check_the_token_caches_own_redis(
    topology: Topology,
) -> None:
    for port in (topology.env["OPS_PORT"], topology.env["EDGE_OPS_PORT"]):
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/readyz") as r:
            body = await r.json()
            assert r.status == 200 and body["checks"]["token_cache"] == "ok", body


async def test_a_url_expires_at_its_deadline_and_the_worker_retires_it(
    topology: Topology,
    tapi: aiohttp.ClientSession,
    tokens: TokenCache,
    res: Resources,
    tworker: WorkerHandle,
) -> None:
    _, url = await share(tapi, {"expires_after": 2})
    token = token_of(url)
    assert (await fetch(url))[0] == 200
    deadline = await res.db.fetchval(
        "SELECT extract(epoch FROM expires_at) FROM public_urls WHERE token = $1", token
    )
    await until_past(res, float(deadline))
    assert (await fetch(url))[0] == 404

    async def retired() -> bool:
        reason = await res.db.fetchval(
            "SELECT revoke_reason FROM public_urls WHERE token = $1", token
        )
        return reason == "expired" and await tokens.get(token) is None

    await wait_for(retired, timeout=20, what="the worker expiring the URL")


async def test_reconcile_rebuilds_the_topologys_token_cache_after_a_flush(
    topology: Topology,
    tapi: aiohttp.ClientSession,
    tokens: TokenCache,
    tworker: WorkerHandle,
) -> None:
    live = [(await share(tapi, {"expires_after": 3600}))[1] for _ in range(4)]
    live.append((await share(tapi))[1])
    # Revoked URLs until their tokens fall on every primary (a cluster's three shards).
    dead: list[str] = []
    primaries: set[str] = set()
    while len(primaries) < len(topology.primaries):
        file_id, url = await share(tapi)
        assert (await revoke(tapi, file_id))[0] == 200
        dead.append(url)
        primaries.add(await shard_of(tokens, token_of(url)))

    await tokens.redis.flushall()  # every primary; the replica follows

    async def all_status(urls: list[str], status: int) -> bool:
        return {(await fetch(u))[0] for u in urls} == {status}

    # The worker notices the token cache's own epoch is gone and reconciles at once.
    await wait_for(lambda: all_status(live, 200), timeout=15, what="reconcile restoring entries")
    assert await all_status(dead, 404)
    record = await tokens.get(token_of(live[0]))
    assert record is not None
    ttl = await tokens.redis.pttl(token_cache.key(token_of(live[0])))
    assert 0 < ttl <= 3600_000
    # Entries of revoked URLs, written back behind the API's back on every primary, are
    # found by the scan and removed.
    for url in dead:
        await tokens.put(token_of(url), record)

    async def dropped() -> bool:
        return not any(await tokens.mget([token_cache.key(token_of(u)) for u in dead]))

    await wait_for(dropped, timeout=15, what="reconcile removing dead entries")


async def test_no_reader_sees_200_after_revoke_returns_on_the_topology(
    tapi: aiohttp.ClientSession,
) -> None:
    file_id, url = await share(tapi)

    async def kill() -> None:
        assert (await revoke(tapi, file_id))[0] == 200

    await race_revocation(url, kill)


async def test_no_reader_sees_200_after_delete_returns_on_the_topology(
    tapi: aiohttp.ClientSession,
) -> None:
    file_id, url = await share(tapi)

    async def kill() -> None:
        assert (await call(tapi, "DELETE", f"/v1/files/{file_id}"))[0] == 200

    await race_revocation(url, kill)


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
async def test_concurrent_lookups_of_tokens_on_every_shard_are_all_served(
    tapi: aiohttp.ClientSession, tokens: TokenCache
) -> None:
    urls: list[str] = []
    shards: set[str] = set()
    while len(shards) < 3 or len(urls) < 12:  # a few per shard, so a tick spans slots
        url = (await share(tapi))[1]
        shards.add(await shard_of(tokens, token_of(url)))
        urls.append(url)
    for _ in range(3):  # one edge process: each wave's lookups leave in one tick
        answers = await asyncio.gather(*(fetch(u) for u in urls))
        assert {status for status, _ in answers} == {200}


@pytest.mark.parametrize("topology", ["replica"], indirect=True)
async def test_a_write_the_replica_does_not_confirm_fails_and_changes_nothing(
    topology: Topology, tapi: aiohttp.ClientSession, tokens: TokenCache, res: Resources
) -> None:
    file_id, url = await share(tapi)
    other = await upload(tapi, png())
    token = token_of(url)
    copy = topology.process("copy")
    copy.send_signal(signal.SIGSTOP)  # the replica stops acknowledging
    try:
        status, body = await revoke(tapi, file_id)
        assert status == 503, body
        # Not revoked: the row is live, as the 503 says; the entry is already gone from
        # the primary (the URL is dead, the safe side) until a retry or reconcile.
        assert await res.db.fetchval(
            "SELECT revoked_at IS NULL FROM public_urls WHERE token = $1", token
        )
        assert await tokens.get(token) is None
        # A create is undone too: no row, and no entry left on the primary.
        status, body = await create(tapi, other["id"], {})
        assert status == 503, body
        assert not await res.db.fetchval(
            "SELECT count(*) FROM public_urls WHERE file_id = $1", other["id"]
        )
    finally:
        copy.send_signal(signal.SIGCONT)
    async for batch in tokens.tokens(500):
        for raw in await tokens.mget([token_cache.key(t) for t in batch]):
            assert raw is None or token_cache.UrlRecord.decode(raw).file_id != other["id"]
    # Once the replica is back, the retried revoke succeeds and the URL stays dead.
    status, body = await revoke(tapi, file_id)
    assert status == 200 and body["revoked"] is True, body
    assert (await fetch(url))[0] == 404


async def test_a_cluster_the_edge_cannot_reach_fails_lookups_closed() -> None:
    cluster = RedisCluster(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    lookups = TokenLookups(cluster, timeout=2.0)
    try:
        with pytest.raises(RedisUnavailable):
            await lookups.get("A" * 22)
    finally:
        await lookups.close()
        await cluster.aclose()
