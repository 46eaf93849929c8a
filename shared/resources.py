"""The composition root: opens and closes PostgreSQL, Redis, S3 and the job queue.

API, worker, edge and CLI all get their dependencies from here, created once at startup
and passed explicitly; nothing is a module-level client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from arq.connections import ArqRedis

from shared import db, scheduling
from shared.redis_client import (
    create_redis,
    create_token_redis,
    has_own_token_redis,
    token_cache,
)
from shared.settings import Settings
from shared.storage import Storage
from shared.token_cache import TokenCache
from shared.upload_limits import UploadLimits


@dataclass
class Resources:
    settings: Settings
    redis: aioredis.Redis
    storage: Storage
    tokens: TokenCache  # the only writer of token-cache entries
    _db: asyncpg.Pool | None = None
    _arq: ArqRedis | None = None
    _uploads: UploadLimits | None = None

    @property
    def db(self) -> asyncpg.Pool:
        if self._db is None:
            raise RuntimeError("this process was opened without PostgreSQL")
        return self._db

    @property
    def uploads(self) -> UploadLimits:
        """This process's limits on uploads in progress (created on first use)."""
        if self._uploads is None:
            self._uploads = UploadLimits.from_settings(self.settings)
        return self._uploads

    @property
    def arq(self) -> ArqRedis:
        if self._arq is None:
            raise RuntimeError("this process was opened without the job queue")
        return self._arq


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    postgres: bool = True,
    db_timeout: float = db.BACKGROUND_TIMEOUT,
    statement_timeout: float | None = None,
) -> AsyncIterator[Resources]:
    """Open every dependency a process needs; the edge passes postgres=False, the API
    db_timeout=DB_TIMEOUT and statement_timeout=DB_STATEMENT_TIMEOUT (a request's
    statements are short)."""
    redis = create_redis(settings, timeout=settings.redis_timeout)
    own_token_redis = has_own_token_redis(settings)
    tokens = token_cache(
        settings,
        create_token_redis(settings, timeout=settings.redis_timeout) if own_token_redis else redis,
    )
    storage = Storage(settings)
    pool = (
        await db.create_pool(
            settings, command_timeout=db_timeout, statement_timeout=statement_timeout
        )
        if postgres
        else None
    )
    # The job queue shares Redis's connection pool instead of opening its own.
    arq = scheduling.queue(redis, settings.arq_queue_name)
    try:
        yield Resources(settings, redis, storage, tokens, pool, arq)
    finally:
        await storage.close()
        if pool is not None:
            try:  # a graceful close waits for PostgreSQL: bounded, then the sockets are cut
                await asyncio.wait_for(pool.close(), db_timeout)
            except Exception:
                pool.terminate()
        if own_token_redis:
            await tokens.redis.aclose()
        await redis.aclose()
