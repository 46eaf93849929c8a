"""The edge's token lookups (`cdn_edge/lookups.py`) on a real Redis: batching never answers
a lookup from a read sent before it arrived, and their own connections survive a restart."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from cdn_edge import lookups
from cdn_edge.lookups import RedisUnavailable, TokenLookups
from shared import token_cache
from tests.helpers import OwnRedis


async def test_a_lookup_made_while_an_mget_is_in_flight_is_answered_by_a_later_read(
    own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revocation race at the batch boundary: a token deleted while an MGET is in flight,
    then looked up, must read as gone, never as what the earlier MGET saw."""
    await own_redis.client.set(token_cache.key("tok"), b"live")
    monkeypatch.setattr(lookups, "_HOLD", 30.0)  # only the answer may release the next batch
    client = aioredis.Redis.from_url(own_redis.url)
    lk = TokenLookups(client, timeout=10.0)
    sent = asyncio.Event()
    release = asyncio.Event()
    real = lk._mget_direct
    batches: list[list[str]] = []

    async def held(keys: list[str]) -> list[bytes | None]:
        batches.append(keys)
        values = await real(keys)  # read now ...
        if len(batches) == 1:
            sent.set()
            await release.wait()  # ... answered later: the MGET stays in flight meanwhile
        return values

    monkeypatch.setattr(lk, "_mget_direct", held)
    try:
        first = asyncio.ensure_future(lk.get("tok"))
        await sent.wait()
        await own_redis.client.delete(token_cache.key("tok"))  # the revoke returns
        second = asyncio.ensure_future(lk.get("tok"))
        third = asyncio.ensure_future(lk.get("tok"))
        await asyncio.sleep(0)
        assert not second.done() and len(batches) == 1  # waiting for the read in flight
        release.set()
        assert await first == b"live"  # read before the revoke
        assert await second is None and await third is None
        assert len(batches) == 2 and len(batches[1]) == 2  # the two left together, after
    finally:
        await lk.close()
        await client.aclose()


async def test_lookups_reconnect_after_redis_restarts_without_failing_a_request(
    own_redis: OwnRedis,
) -> None:
    await own_redis.client.set(token_cache.key("tok"), b"v1")
    client = aioredis.Redis.from_url(own_redis.url, socket_timeout=2.0)
    lk = TokenLookups(client, timeout=2.0)
    try:
        assert await lk.get("tok") == b"v1"  # its connection is now idle, kept for later
        own_redis.stop()
        with pytest.raises(RedisUnavailable):  # down: fail closed
            await lk.get("tok")
        own_redis.start()
        fresh = aioredis.Redis.from_url(own_redis.url)
        await fresh.set(token_cache.key("tok"), b"v2")
        await fresh.aclose()
        assert await lk.get("tok") == b"v2"  # the dead connection was dropped, not reused
    finally:
        await lk.close()
        await client.aclose()


async def test_an_idle_connection_broken_by_a_restart_is_retried_on_a_fresh_one(
    own_redis: OwnRedis,
) -> None:
    await own_redis.client.set(token_cache.key("tok"), b"v1")
    client = aioredis.Redis.from_url(own_redis.url, socket_timeout=2.0)
    lk = TokenLookups(client, timeout=2.0)
    try:
        assert await lk.get("tok") == b"v1"
        own_redis.stop()
        own_redis.start()  # no lookup in between: the kept connection is dead, unknowingly
        fresh = aioredis.Redis.from_url(own_redis.url)
        await fresh.set(token_cache.key("tok"), b"v2")
        await fresh.aclose()
        assert await lk.get("tok") == b"v2"  # no 503 for the restart nobody saw
    finally:
        await lk.close()
        await client.aclose()
