"""Levels sampled once a minute into the per-minute buckets (`state.*` fields), so that the
dashboard can chart them over days: the job queue, the event stream, live public URLs.

One worker samples each minute (the first to take `filecdn:metrics:sampled:<minute>`), at
the start of the minute, into that minute's bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from shared import metrics, ops_state
from shared.resources import Resources
from worker.failures import log_failure

log = structlog.get_logger(__name__)

SAMPLED_PREFIX = "filecdn:metrics:sampled:"
_CHECK_EVERY = 5.0  # seconds


async def sample(res: Resources) -> dict[str, int]:
    q = await ops_state.queue(res.redis, res.settings.arq_queue_name)
    s = await ops_state.stream(res.redis)
    return {
        "queue.depth": q.depth,
        "queue.overdue": q.overdue,
        "events.pending": s.pending,
        "events.oldest_pending_s": round(s.oldest_pending_seconds or 0),
        "urls.active": await ops_state.active_urls(res.db),
    }


async def loop(res: Resources, stop: asyncio.Event) -> None:
    last = 0
    while not stop.is_set():
        minute = int(time.time()) // 60 * 60
        if minute != last:
            try:
                if await res.redis.set(f"{SAMPLED_PREFIX}{minute}", "1", nx=True, ex=120):
                    await metrics.set_state(
                        res.redis, await sample(res), res.settings.metrics_retention_seconds, minute
                    )
                last = minute
            except Exception as exc:
                log_failure(log, "state sample", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=_CHECK_EVERY)
