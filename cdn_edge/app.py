"""The public serving path: GET /<token>/<name>. Minimal until the edge issue lands."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from redis.exceptions import RedisError

from shared import token_cache
from shared.resources import Resources, open_resources
from shared.settings import Settings

RESOURCES = web.AppKey("resources", Resources)
_NOT_FOUND = b"Not Found\n"


def not_found() -> web.Response:
    return web.Response(
        status=404,
        body=_NOT_FOUND,
        content_type="text/plain",
        headers={"Cache-Control": "no-store"},
    )


async def serve(request: web.Request) -> web.StreamResponse:
    res = request.app[RESOURCES]
    try:
        record = await token_cache.lookup(res.redis, request.match_info["token"])
    except (RedisError, OSError):
        return web.Response(status=503, text="Service Unavailable\n")
    if record is None or record.name != request.match_info["name"]:
        return not_found()
    async with res.storage.open(record.object_key) as src:
        if src.status != 200:
            return web.Response(status=502, text="Bad Gateway\n")
        resp = web.StreamResponse()
        resp.content_type = record.content_type
        resp.content_length = record.size
        resp.headers["ETag"] = record.etag
        await resp.prepare(request)
        async for chunk in src.content.iter_chunked(256 * 1024):
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(settings: Settings) -> web.Application:
    app = web.Application()

    async def resources(app: web.Application) -> AsyncIterator[None]:
        async with open_resources(settings, postgres=False) as res:
            app[RESOURCES] = res
            yield

    app.cleanup_ctx.append(resources)
    app.router.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/{token}/{name}", serve),
        ]
    )
    return app


with contextlib.suppress(ImportError):
    import uvloop  # noqa: F401
