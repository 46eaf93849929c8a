"""Liveness, and readiness: PostgreSQL, Redis and S3 each answer within a bound.

`/healthz` (public port and ops port) says the process serves. Readiness runs the three
checks (four when the token cache has its own Redis: `token_cache`) in parallel, each
bounded at CHECK_TIMEOUT, and keeps the result for CACHE_SECONDS: probes from the kubelet,
the dashboard and Prometheus together cost at most one round of checks that often, and
callers arriving while a round runs share it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from shared.resources import Resources

CHECK_TIMEOUT = 2.0
CACHE_SECONDS = 1.5


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    ms: float
    error: str | None  # the failure, shortened; never a traceback

    @property
    def summary(self) -> str:
        return "ok" if self.ok else f"error: {self.error}"


@dataclass(frozen=True, slots=True)
class Result:
    checks: dict[str, Check]
    at: float  # Unix seconds

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())


async def _check(probe: Callable[[], Awaitable[object]]) -> Check:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT)
    except TimeoutError:
        error: str | None = f"no answer within {CHECK_TIMEOUT:g}s"
    except Exception as exc:  # any failure means "not ready", with the reason shown
        error = f"{type(exc).__name__}: {exc}"[:200]
    else:
        error = None
    return Check(error is None, round((time.perf_counter() - started) * 1000, 1), error)


class Readiness:
    """The dependencies' health, checked at most once per CACHE_SECONDS."""

    def __init__(self, res: Resources) -> None:
        self._res = res
        self._result: Result | None = None
        self._at = 0.0
        self._round: asyncio.Task[Result] | None = None

    async def result(self) -> Result:
        if self._result is not None and time.monotonic() - self._at < CACHE_SECONDS:
            return self._result
        if self._round is None or self._round.done():
            self._round = asyncio.get_running_loop().create_task(self._run())
        return await asyncio.shield(self._round)

    async def _run(self) -> Result:
        res = self._res
        probes: dict[str, Callable[[], Awaitable[object]]] = {
            "postgres": lambda: res.db.fetchval("SELECT 1"),
            "redis": lambda: res.redis.ping(),
            "s3": res.storage.ping,
        }
        if res.tokens.redis is not res.redis:  # the token cache's own Redis (or cluster)
            probes["token_cache"] = lambda: res.tokens.redis.ping()
        checks = await asyncio.gather(*(_check(probe) for probe in probes.values()))
        self._result = Result(dict(zip(probes, checks, strict=True)), time.time())
        self._at = time.monotonic()
        return self._result


READINESS = web.AppKey("readiness", Readiness)


async def readyz(request: web.Request) -> web.Response:
    result = await request.app[READINESS].result()
    return web.json_response(
        {
            "status": "ok" if result.ok else "unavailable",
            "checks": {name: c.summary for name, c in result.checks.items()},
        },
        status=200 if result.ok else 503,
        headers={"Cache-Control": "no-store"},
    )
