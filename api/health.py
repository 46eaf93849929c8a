"""Liveness, readiness (PostgreSQL, Redis, S3 each checked with a bound) and Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import prometheus_client
from aiohttp import web

from api import context

_CHECK_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _check(probe: Callable[[], Awaitable[object]]) -> str:
    try:
        await asyncio.wait_for(probe(), _CHECK_TIMEOUT)
    except Exception as exc:  # any failure means "not ready", with the reason shown
        return f"error: {type(exc).__name__}: {exc}"[:200]
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    res = context.resources(request)
    names = ("postgres", "redis", "s3")
    results = await asyncio.gather(
        _check(lambda: res.db.fetchval("SELECT 1")),
        _check(lambda: res.redis.ping()),
        _check(res.storage.ping),
    )
    checks = dict(zip(names, results, strict=True))
    ok = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=prometheus_client.generate_latest(),
        headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST},
    )
