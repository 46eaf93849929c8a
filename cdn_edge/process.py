"""One edge process: its clients, caches and background tasks, from start to drained stop.

The edge holds no database connection and no authorisation state: Redis (token records)
and S3 (bytes) are all it talks to, so any number of processes and replicas agree.

Stopping (see `cdn_edge.stopping`): on SIGTERM the process keeps serving for
EDGE_DRAIN_DELAY with every response closing its connection (keep-alive clients reconnect,
to another replica once the load balancer has seen /readyz fail), then closes its listener,
closes idle connections, and gives the responses under way EDGE_DRAIN_TIMEOUT to finish
before it cuts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import struct
import termios
import time
from collections.abc import AsyncIterator, Sequence

import redis.asyncio as aioredis
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from cdn_edge import metrics
from cdn_edge.cache import MemoryCache
from cdn_edge.evictions import tail_deletions
from cdn_edge.handler import EdgeHandler
from cdn_edge.links import MAX_TOKENS, LinkCounts
from cdn_edge.lookups import TokenLookups
from cdn_edge.metrics import Counters
from cdn_edge.ops import Readiness, start_ops
from cdn_edge.origin import Origin
from cdn_edge.reports import Reporter
from cdn_edge.responses import RecordViews
from cdn_edge.slice_cache import SliceCache
from cdn_edge.stopping import StopSignals
from shared.redis_client import create_redis, create_token_redis, has_own_token_redis
from shared.settings import Settings
from shared.storage import Storage
from shared.token_cache import TokenRedis

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def open_edge(
    settings: Settings, counters: Counters
) -> AsyncIterator[tuple[EdgeHandler, aioredis.Redis, TokenRedis | None]]:
    """The handler with its dependencies, and the background tasks that keep it fresh;
    with REDIS_URL's client and the token cache's own (None when it shares REDIS_URL's)."""
    redis = create_redis(settings, timeout=settings.edge_redis_timeout)
    # Token lookups may go to their own Redis (a cluster, or a replica near the edge).
    own_token_redis = has_own_token_redis(settings)
    token_redis = (
        create_token_redis(settings, timeout=settings.edge_redis_timeout)
        if own_token_redis
        else redis
    )
    storage = Storage(settings, read_timeout=settings.edge_s3_timeout)
    lookups = TokenLookups(token_redis, settings.edge_redis_timeout)
    wake = asyncio.Event()  # per-link counts are full: report before the second is up
    links = LinkCounts(counters, MAX_TOKENS, wake.set) if settings.edge_link_stats else None
    origin = Origin(storage, settings.edge_s3_timeout, counters)
    edge = EdgeHandler(
        lookups=lookups,
        views=RecordViews(settings.edge_cache_control),
        origin=origin,
        memory=MemoryCache(settings.edge_memory_cache_bytes, settings.edge_memory_cache_object_max),
        slices=SliceCache(
            origin,
            settings.edge_cache_dir,
            max_bytes=settings.edge_disk_cache_bytes,
            slice_bytes=settings.edge_slice_bytes,
            memory_bytes=settings.edge_slice_memory_bytes,
            # A filler elsewhere gets this long (its S3 reads are bounded by the timeout).
            wait_max=3 * settings.edge_s3_timeout,
        ),
        counters=counters if settings.edge_metrics else None,
        links=links,
        access_log=settings.edge_access_log,
    )
    reporter = Reporter(
        redis,
        counters,
        metrics=settings.edge_metrics,
        links=links,
        retention=settings.metrics_retention_seconds,
        timeout=settings.edge_redis_timeout,
        gauges=lambda: edge.publish_gauges(counters),
        wake=wake,
    )
    loop = asyncio.get_running_loop()
    block_ms = max(100, int(settings.edge_redis_timeout * 500))  # half the socket timeout
    tasks = [
        loop.create_task(tail_deletions(redis, edge.evict, block_ms), name="evictions"),
        loop.create_task(reporter.run(), name="reports"),
    ]
    if edge.slices.enabled:
        tasks.append(loop.create_task(edge.slices.run_trimmer(), name="slice-trimmer"))
    try:
        yield edge, redis, (token_redis if own_token_redis else None)
    finally:
        await stop_tasks(tasks)
        await reporter.report()  # what the last second counted
        await edge.close()
        await lookups.close()
        await storage.close()
        if own_token_redis:
            await token_redis.aclose()
        await redis.aclose()


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait for them, cancelling again while any survives: redis-py
    can swallow a cancellation that lands while it is connecting (seen with 5.3 on 3.11)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)


async def serve(settings: Settings, counters: Counters, *, reuse_port: bool, ops: bool) -> int:
    """Serve until SIGTERM or SIGINT, drain, and stop; the exit status.

    `ops`: this process runs the instance's ops listener too (`--workers 1`).
    """
    quiet_client_errors()
    signals = StopSignals()
    try:
        async with open_edge(settings, counters) as (edge, redis, token_redis):
            server = web.Server(
                edge.handle,
                handler_cancellation=True,  # a client that leaves cancels its S3 read at once
                access_log=None,
                keepalive_timeout=settings.edge_keepalive_timeout,
            )
            runner = web.ServerRunner(
                server, handle_signals=False, shutdown_timeout=settings.edge_drain_timeout
            )
            await runner.setup()
            readiness = Readiness(
                redis,
                settings.edge_redis_timeout,
                lambda: counters.slot[metrics.SERVING],
                token_redis,
            )
            ops_runner: web.AppRunner | None = None
            try:
                await web.TCPSite(
                    runner,
                    settings.edge_host,
                    settings.edge_port,
                    reuse_port=reuse_port,
                    reuse_address=True,
                    backlog=4096,
                ).start()
                if ops:
                    ops_runner = await start_ops(
                        settings,
                        lambda: metrics.prometheus(
                            counters.counters(),
                            [counters.slot],
                            [metrics.disk_cache_limit(settings.edge_disk_cache_bytes)],
                        ),
                        readiness,
                    )
            except OSError as exc:
                log.error("edge cannot listen", error=str(exc))
                await runner.cleanup()
                return 1
            counters.slot[metrics.SERVING] = 1
            log.info("edge listening", url=f"http://{settings.edge_host}:{settings.edge_port}")
            try:
                await drain(settings, signals, edge, runner, server, readiness, counters)
            finally:
                if ops_runner is not None:
                    await ops_runner.cleanup()
    finally:
        signals.close()
    return 0


async def drain(
    settings: Settings,
    signals: StopSignals,
    edge: EdgeHandler,
    runner: web.ServerRunner,
    server: web.Server,
    readiness: Readiness,
    counters: Counters,
) -> None:
    """Wait for a stop signal, then stop taking traffic in the order load balancers need."""
    sig = await signals.wait()
    began = time.monotonic()
    readiness.stopping = True
    counters.slot[metrics.SERVING] = 0
    edge.draining = True
    if sig == signal.SIGTERM and settings.edge_drain_delay > 0:
        log.info(
            "edge draining: /readyz answers 503, responses close their connections",
            delay_s=settings.edge_drain_delay,
        )
        await signals.delay(settings.edge_drain_delay)
    log.info(
        "edge stopping: listener closed, finishing responses under way",
        connections=len(server.connections),
        timeout_s=settings.edge_drain_timeout,
    )
    deadline = time.monotonic() + settings.edge_drain_timeout
    transports = [c.transport for c in server.connections if c.transport is not None]
    queues = SendQueues(transports)
    cleanup = asyncio.ensure_future(runner.cleanup())
    try:
        # aiohttp closes idle connections at once and the others once their response is
        # written (within EDGE_DRAIN_TIMEOUT); a slow client may not have taken the last bytes
        # yet, in the transports' buffers or the kernel's. Exiting then would drop that
        # tail: wait for it (bounded; polled, as no callback tells when a closed transport
        # has flushed). Polled from the start, so that each connection's duplicate goes as
        # soon as it is done with, and an idle client sees its FIN at once.
        while True:
            unsent = queues.unsent() or any(t.get_write_buffer_size() for t in transports)
            if cleanup.done() and (not unsent or time.monotonic() >= deadline):
                break
            await asyncio.sleep(0.01)
        await cleanup
        for t in transports:
            if t.get_write_buffer_size():
                t.abort()  # out of time: cut, so the client sees a short body, never a wrong one
    finally:
        queues.close()
    log.info("edge stopped", signal=sig.name, drain_s=round(time.monotonic() - began, 3))


class SendQueues:
    """Whether the connections' kernel send queues still hold bytes, once aiohttp has closed
    them.

    A process that exits leaves its unsent bytes to the kernel, which sends them on; but in
    a pod the network goes away with the last process, and what was queued then never
    arrives: a slow client's download would be cut by megabytes (a socket's send buffer
    grows to 4 MiB). So the drain keeps a duplicate of each socket and lets it go once
    aiohttp has closed the connection and its queue is empty (SIOCOUTQ: bytes the client
    has not acknowledged); the socket, and its FIN, go with the duplicate.
    """

    def __init__(self, transports: Sequence[asyncio.Transport]) -> None:
        self._held: list[tuple[asyncio.Transport, int]] = []
        for t in transports:
            sock = t.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._held.append((t, os.dup(sock.fileno())))

    def unsent(self) -> bool:
        """Whether any connection is not done with; lets go of those that are."""
        held = []
        for t, fd in self._held:
            if t.is_closing() and not t.get_write_buffer_size() and not _queued(fd):
                os.close(fd)
            else:
                held.append((t, fd))
        self._held = held
        return bool(held)

    def close(self) -> None:
        for _, fd in self._held:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held = []


def _queued(fd: int) -> int:
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0" * 4))[0])
    except OSError:
        return 0


class _ClientCaused(logging.Filter):
    """aiohttp logs a client's malformed request or early disconnect as an error with a
    traceback; those are the client's doing: one info line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ConnectionError | HttpProcessingError):
            what = "client went away" if isinstance(exc, ConnectionError) else "bad request"
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            detail = " ".join(str(exc).split())[:200]  # aiohttp's messages span lines
            record.msg = f"{what}: {type(exc).__name__}: {detail} (peer {peer})"
            record.args = None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_client_errors() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ClientCaused) for f in server_log.filters):
        server_log.addFilter(_ClientCaused())
