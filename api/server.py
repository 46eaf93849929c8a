"""The API process: REST (aiohttp) and, beside it in the same event loop, gRPC; and the
private ops listener (dashboard, Prometheus, probes) on OPS_PORT."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import structlog
from aiohttp import web

from api import grpc_server
from api.app import build_app
from api.ops import build_ops_app
from api.request_metrics import RequestCounter
from shared import db
from shared.lifecycle import until_stopped
from shared.metrics import Tally
from shared.resources import open_resources
from shared.settings import Settings

log = structlog.get_logger(__name__)


async def _listen(
    app: web.Application, host: str, port: int, keepalive_timeout: float
) -> web.AppRunner:
    # aiohttp keeps an idle connection ~1 h by default. Its keep-alive timer also runs from
    # the moment a connection opens until its request's headers are in, so the same
    # setting bounds a client that sends its headers slowly (or never).
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=keepalive_timeout
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


async def serve(settings: Settings) -> None:
    if settings.pagination_secret is None:
        log.warning("PAGINATION_SECRET is unset: list cursors only work on this replica")
    async with open_resources(
        settings, db_timeout=settings.db_timeout, statement_timeout=settings.db_statement_timeout
    ) as res:
        await db.check_schema(res.db)  # SchemaOutdated: `filecdn api` exits with its message
        await res.storage.ensure_bucket()
        tally = Tally(res.redis, settings.metrics_retention_seconds)
        requests = RequestCounter(tally)
        flusher = asyncio.get_running_loop().create_task(tally.run())
        keepalive = settings.api_keepalive_timeout
        ops = await _listen(build_ops_app(res), settings.ops_host, settings.ops_port, keepalive)
        rest = await _listen(
            build_app(res, requests), settings.api_host, settings.api_port, keepalive
        )
        grpc_api: grpc.aio.Server = await grpc_server.start(res, settings, requests)
        log.info(
            "api listening",
            rest=f"http://{settings.api_host}:{settings.api_port}",
            grpc=f"{settings.api_host}:{settings.grpc_port}",
            ops=f"http://{settings.ops_host}:{settings.ops_port}",
        )
        await until_stopped()
        log.info("api stopping")
        await grpc_api.stop(grace=5)
        await rest.cleanup()
        await ops.cleanup()
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        await tally.flush()
