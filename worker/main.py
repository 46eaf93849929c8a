"""The worker process: arq's runner plus our consumer and reconcile loops."""

from __future__ import annotations

import asyncio

from arq.connections import RedisSettings
from arq.worker import Worker, async_check_health

from shared.settings import Settings
from worker.settings import worker_settings


def check(settings: Settings) -> int:
    """Exit status for a liveness probe: 0 if a worker on this queue reported recently."""
    assert settings.redis_url
    return asyncio.run(
        async_check_health(
            RedisSettings.from_dsn(settings.redis_url), None, settings.arq_queue_name
        )
    )


def run_worker(settings: Settings) -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())
    Worker(**worker_settings(settings)).run()
