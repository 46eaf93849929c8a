"""The worker process: arq's runner plus our consumer and reconcile loops."""

from __future__ import annotations

import asyncio

from arq.worker import async_check_health

from shared.settings import Settings
from worker.settings import build_worker, redis_settings


def check(settings: Settings) -> int:
    """Exit status for a liveness probe: 0 if a worker on this queue reported recently."""
    return asyncio.run(async_check_health(redis_settings(settings), None, settings.arq_queue_name))


def run_worker(settings: Settings) -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is not built for Windows
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())
    build_worker(settings).run()
