"""The edge's private ops listener (EDGE_OPS_PORT on OPS_HOST): metrics and probes.

One per edge instance, in the supervisor (or in the process itself with `--workers 1`):

- `GET /metrics`: Prometheus text, summed over the instance's processes (`cdn_edge.metrics`);
- `GET /healthz`: 200 while the process runs (liveness);
- `GET /readyz`: 200 when the instance should get traffic, else 503 with the failing check.
  Ready means: not stopping (503 from the first moment of a drain), at least one process
  accepting connections, and Redis (and the token cache's own Redis, when it has one)
  answering a PING within EDGE_REDIS_TIMEOUT (every request needs Redis; an edge that cannot
  reach it can only answer 503). S3 is not checked:
  the caches still serve while S3 is away, and an S3 outage hits every replica alike, so
  taking them all out of rotation would only turn some answers into none. The result is
  kept for a second, so probes from many sources cost one PING a second at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisClusterException, RedisError

from shared.settings import Settings
from shared.token_cache import TokenRedis

_READY_FOR = 1.0  # seconds a readiness result is reused


class Readiness:
    def __init__(
        self,
        redis: aioredis.Redis,
        timeout: float,
        serving: Callable[[], int],
        token_redis: TokenRedis | None = None,  # the token cache's own, when it has one
    ) -> None:
        self._redis = redis
        self._token_redis = token_redis
        self._timeout = timeout
        self._serving = serving
        self.stopping = False
        self._result: tuple[bool, dict[str, str]] | None = None
        self._at = 0.0
        self._check: asyncio.Task[tuple[bool, dict[str, str]]] | None = None

    async def check(self) -> tuple[bool, dict[str, str]]:
        """(ready, what each check found)."""
        if self.stopping:
            return False, {"stopping": "draining: finishing the responses under way"}
        if self._result is not None and time.monotonic() - self._at < _READY_FOR:
            return self._result
        if self._check is None or self._check.done():
            self._check = asyncio.get_running_loop().create_task(self._run())
        return await asyncio.shield(self._check)

    async def _run(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        serving = self._serving()
        checks["serving"] = f"{serving} process(es) accepting connections"
        ok = serving > 0
        targets: dict[str, TokenRedis] = {"redis": self._redis}
        if self._token_redis is not None:
            targets["token_cache"] = self._token_redis
        for name, client in targets.items():
            try:
                async with asyncio.timeout(self._timeout):
                    await client.ping()
                checks[name] = "ok"
            except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
                checks[name] = f"unreachable within {self._timeout:g}s: {type(exc).__name__}"
                ok = False
        self._result, self._at = (ok, checks), time.monotonic()
        return ok, checks


def ops_app(metrics: Callable[[], bytes], readiness: Readiness) -> web.Application:
    async def get_metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics(),
            headers={
                "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                "Cache-Control": "no-store",
            },
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready, checks = await readiness.check()
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    app = web.Application()
    app.router.add_routes(
        [
            web.get("/metrics", get_metrics),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
        ]
    )
    return app


async def start_ops(
    settings: Settings, metrics: Callable[[], bytes], readiness: Readiness
) -> web.AppRunner:
    """Listen on OPS_HOST:EDGE_OPS_PORT; the caller cleans the runner up."""
    runner = web.AppRunner(ops_app(metrics, readiness), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.ops_host, settings.edge_ops_port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
