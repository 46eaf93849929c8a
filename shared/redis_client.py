"""The Redis client every process opens (API, worker, edge, CLI), with bounded waits."""

from __future__ import annotations

import redis.asyncio as aioredis

from shared.settings import Settings


def create_redis(settings: Settings, *, timeout: float | None = None) -> aioredis.Redis:
    """A client whose commands fail after `timeout` seconds: a 503, never a stall."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    client: aioredis.Redis = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout or 5,
        health_check_interval=30,
    )
    return client
