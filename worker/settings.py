"""The arq WorkerSettings, built from our Settings: functions, startup and shutdown.

`on_startup` opens the shared resources once and starts the stream consumer and the
reconcile loop beside arq's job runner; `on_shutdown` stops them and closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from arq.connections import RedisSettings

from shared.resources import open_resources
from shared.settings import Settings
from worker import events, jobs, reconcile


def worker_settings(settings: Settings) -> dict[str, Any]:
    async def on_startup(ctx: dict[str, Any]) -> None:
        stack = contextlib.AsyncExitStack()
        ctx["stack"] = stack
        res = await stack.enter_async_context(open_resources(settings))
        await res.storage.ensure_bucket()
        ctx["resources"] = res
        stop = asyncio.Event()
        ctx["stop"] = stop
        ctx["loops"] = [
            asyncio.create_task(events.consume(res, events.consumer_name(), stop)),
            asyncio.create_task(reconcile.loop(res, stop)),
        ]

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        ctx["stop"].set()
        for task in ctx["loops"]:
            task.cancel()
        await asyncio.gather(*ctx["loops"], return_exceptions=True)
        await ctx["stack"].aclose()

    assert settings.redis_url
    return {
        "functions": [jobs.expire_public_url, jobs.expire_file],
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "queue_name": settings.arq_queue_name,
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "max_tries": 10,
        "keep_result": 60,
        "poll_delay": 0.25,
        # The liveness sentinel `filecdn worker --check` reads (arq's default is an hour).
        "health_check_interval": 30,
        "handle_signals": True,
    }
