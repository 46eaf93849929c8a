"""Token lookups: each request's one Redis round trip, coalesced per event-loop tick.

Every lookup asked for while the loop handles one batch of ready sockets leaves as a single
`MGET`, and each request gets the answer Redis gave at that moment: nothing about
authorisation is remembered between requests, so a revoke bites on the very next request.
Coalescing is what lets one edge process keep up with thousands of requests a second
through redis-py (one command per tick instead of one per request).

On a Redis Cluster (TOKEN_REDIS_MODE=cluster) the tick's keys are split per hash slot, one
MGET per slot, and each node's MGETs leave as one pipeline, the nodes in parallel
(redis-py's `mget_nonatomic`): a request still costs one round trip to the node holding
its token. Tokens are not hash-tagged, so they spread over every shard.

Fail closed: while Redis is unreachable, slow or answering errors (a cluster's included:
a slot without a node, a failover under way), lookups raise `RedisUnavailable` (the edge
answers 503). The client's own timeouts bound the wait, and its pool reconnects (a
cluster client re-reads the slot map) by itself once Redis is back.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from shared import token_cache
from shared.token_cache import TokenRedis

log = structlog.get_logger(__name__)

_MAX_KEYS = 512  # per MGET: bounds one reply's size and the wait of the last key in it


class RedisUnavailable(Exception):
    """Redis could not answer this lookup (down, slow, or an error reply)."""


class TokenLookups:
    def __init__(self, redis: TokenRedis, timeout: float) -> None:
        self._redis = redis
        self._cluster = redis if isinstance(redis, RedisCluster) else None
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._keys: list[str] = []
        self._waiters: list[asyncio.Future[bytes | None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, token: str) -> bytes | None:
        """The raw token record as Redis holds it now, or None; RedisUnavailable if unsure."""
        waiter: asyncio.Future[bytes | None] = self._loop.create_future()
        if not self._keys:
            self._loop.call_soon(self._flush)
        self._keys.append(token_cache.key(token))
        self._waiters.append(waiter)
        return await waiter

    def _flush(self) -> None:
        keys, waiters = self._keys, self._waiters
        self._keys, self._waiters = [], []
        for i in range(0, len(keys), _MAX_KEYS):
            task = self._loop.create_task(
                self._mget(keys[i : i + _MAX_KEYS], waiters[i : i + _MAX_KEYS])
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _mget(self, keys: list[str], waiters: list[asyncio.Future[bytes | None]]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                if self._cluster is not None:
                    values = await self._cluster.mget_nonatomic(keys)
                else:
                    values = await self._redis.mget(keys)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            log.warning("token lookup failed: answering 503", error=repr(exc), batch=len(keys))
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(RedisUnavailable(str(exc)))
            return
        except asyncio.CancelledError:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(RedisUnavailable("shutting down"))
            raise
        for waiter, value in zip(waiters, values, strict=True):
            if not waiter.done():  # a client that went away cancelled its waiter
                waiter.set_result(value)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
