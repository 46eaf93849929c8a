"""The API process: REST (aiohttp) and, beside it in the same event loop, gRPC."""

from __future__ import annotations

import grpc
import structlog
from aiohttp import web

from api import grpc_server
from api.app import build_app
from shared.lifecycle import until_stopped
from shared.resources import open_resources
from shared.settings import Settings

log = structlog.get_logger(__name__)


async def serve(settings: Settings) -> None:
    if settings.pagination_secret is None:
        log.warning("PAGINATION_SECRET is unset: list cursors only work on this replica")
    async with open_resources(settings) as res:
        await res.storage.ensure_bucket()
        runner = web.AppRunner(build_app(res), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, settings.api_host, settings.api_port, reuse_address=True)
        await site.start()
        grpc_api: grpc.aio.Server = await grpc_server.start(res, settings)
        log.info(
            "api listening",
            rest=f"http://{settings.api_host}:{settings.api_port}",
            grpc=f"{settings.api_host}:{settings.grpc_port}",
        )
        await until_stopped()
        log.info("api stopping")
        await grpc_api.stop(grace=5)
        await runner.cleanup()
