"""One edge process: its clients, caches and background tasks, from start to graceful stop.

The edge holds no database connection and no authorisation state: Redis (token records)
and S3 (bytes) are all it talks to, so any number of processes and replicas agree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import structlog
from aiohttp import web

from cdn_edge.cache import DiskCache, MemoryCache
from cdn_edge.evictions import tail_deletions
from cdn_edge.handler import EdgeHandler
from cdn_edge.lookups import TokenLookups
from cdn_edge.metrics import EdgeMetrics
from cdn_edge.origin import Origin
from cdn_edge.responses import RecordViews
from shared.lifecycle import until_stopped
from shared.redis_client import create_redis
from shared.settings import Settings
from shared.storage import Storage

log = structlog.get_logger(__name__)

_SHUTDOWN_GRACE = 10.0  # seconds a response under way may take to finish on stop


@contextlib.asynccontextmanager
async def open_edge(settings: Settings) -> AsyncIterator[tuple[EdgeHandler, aioredis.Redis]]:
    """The handler with its dependencies, and the background tasks that keep it fresh."""
    redis = create_redis(settings, timeout=settings.edge_redis_timeout)
    storage = Storage(settings)
    lookups = TokenLookups(redis, settings.edge_redis_timeout)
    metrics = EdgeMetrics() if settings.edge_metrics else None
    edge = EdgeHandler(
        lookups=lookups,
        views=RecordViews(settings.edge_cache_control),
        origin=Origin(storage, settings.edge_s3_timeout),
        memory=MemoryCache(settings.edge_memory_cache_bytes, settings.edge_memory_cache_object_max),
        disk=DiskCache(
            settings.edge_cache_dir, settings.edge_disk_cache_bytes, settings.edge_disk_cache_bytes
        ),
        metrics=metrics,
        access_log=settings.edge_access_log,
    )
    loop = asyncio.get_running_loop()
    block_ms = max(100, int(settings.edge_redis_timeout * 500))  # half the socket timeout
    tasks = [loop.create_task(tail_deletions(redis, edge.evict, block_ms), name="evictions")]
    if edge.disk.object_max > 0:
        tasks.append(loop.create_task(edge.disk.run_trimmer(), name="disk-trimmer"))
    retention = settings.metrics_retention_seconds
    if metrics is not None:
        tasks.append(
            loop.create_task(
                metrics.run(redis, retention, settings.edge_redis_timeout), name="metrics"
            )
        )
    try:
        yield edge, redis
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if metrics is not None:
            await metrics.flush(redis, retention, settings.edge_redis_timeout)
        await edge.close()
        await lookups.close()
        await storage.close()
        await redis.aclose()


async def serve(settings: Settings, *, reuse_port: bool) -> None:
    """Serve until SIGTERM or SIGINT, then finish the responses under way and stop."""
    async with open_edge(settings) as (edge, _):
        server = web.Server(
            edge.handle,
            handler_cancellation=True,  # a client that leaves cancels its S3 read at once
            access_log=None,
            keepalive_timeout=settings.edge_keepalive_timeout,
        )
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=_SHUTDOWN_GRACE)
        await runner.setup()
        site = web.TCPSite(
            runner,
            settings.edge_host,
            settings.edge_port,
            reuse_port=reuse_port,
            reuse_address=True,
            backlog=4096,
        )
        await site.start()
        log.info("edge listening", url=f"http://{settings.edge_host}:{settings.edge_port}")
        await until_stopped()
        log.info("edge stopping")
        await runner.cleanup()
