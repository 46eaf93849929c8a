"""The Redis clients every process opens (API, worker, edge, CLI), with bounded waits.

Every one is made from a URL here: `redis://user:password@host:port/db` authenticates as an
ACL user (or, without a user, with `requirepass`'s password), and `rediss://` speaks TLS,
verified against the system's CAs or REDIS_TLS_CA_FILE.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from shared.settings import Settings
from shared.token_cache import TokenCache, TokenRedis


def create_redis(settings: Settings, *, timeout: float | None = None) -> aioredis.Redis:
    """A client whose commands fail after `timeout` seconds: a 503, never a stall."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set")
    client: aioredis.Redis = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout or 5,
        health_check_interval=30,
        **_tls(settings, settings.redis_url),
    )
    return client


def _tls(settings: Settings, url: str) -> dict[str, Any]:
    """TLS options for a `rediss://` URL: the CA bundle, when one is configured."""
    if urlsplit(url).scheme != "rediss" or settings.redis_tls_ca_file is None:
        return {}
    return {"ssl_ca_certs": str(settings.redis_tls_ca_file)}


def has_own_token_redis(settings: Settings) -> bool:
    """Whether the token cache needs a client of its own (else it shares REDIS_URL's)."""
    return settings.token_redis_mode == "cluster" or settings.token_redis_url not in (
        None,
        settings.redis_url,
    )


def create_token_redis(settings: Settings, *, timeout: float | None = None) -> TokenRedis:
    """The token cache's client: TOKEN_REDIS_URL (default REDIS_URL), a cluster client in
    cluster mode. Bounded like `create_redis`."""
    url = settings.token_redis_url or settings.redis_url
    if not url:
        raise RuntimeError("TOKEN_REDIS_URL (or REDIS_URL) is not set")
    if settings.token_redis_mode == "cluster":
        # Reads go to the primaries: a replica may not have a revocation yet.
        cluster: RedisCluster = RedisCluster.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout or 5, **_tls(settings, url)
        )
        return cluster
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout or 5,
        health_check_interval=30,
        **_tls(settings, url),
    )
    return client


def token_cache(settings: Settings, redis: TokenRedis) -> TokenCache:
    """The writer over `redis`, waiting for the replicas the settings name."""
    return TokenCache(
        redis,
        wait_replicas=settings.token_redis_wait_replicas,
        wait_timeout=settings.token_redis_wait_timeout,
    )
