"""arq job functions: URL expiry and file expiry. Each is idempotent and version-checked.

Each run is observed (`_observed`): its outcome, and how late it started after it was due
(arq's `score`, the time it was scheduled for), in Prometheus and the per-minute buckets.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from arq import Retry
from arq.typing import WorkerCoroutine
from redis.exceptions import RedisError

from shared import files, metrics, public_urls, scheduling
from shared.resources import Resources
from worker import metrics as observed

log = structlog.get_logger(__name__)

Job = Callable[..., Awaitable[str]]


def _resources(ctx: dict[str, Any]) -> Resources:
    res: Resources = ctx["resources"]
    return res


def _observed(name: str) -> Callable[[Job], WorkerCoroutine]:
    def wrap(fn: Job) -> WorkerCoroutine:
        @functools.wraps(fn)
        async def run(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> str:
            due_ms = ctx.get("score")
            lag_ms = max(0.0, time.time() * 1000 - due_ms) if due_ms else 0.0
            observed.EXPIRY_LAG.labels(name).observe(lag_ms / 1000)
            res = _resources(ctx)
            try:
                await metrics.add(
                    res.redis,
                    observed.expiry_fields(lag_ms),
                    res.settings.metrics_retention_seconds,
                )
            except (RedisError, OSError) as exc:  # only observed: the job still runs
                log.warning("expiry lag not counted", error=str(exc))
            outcome = "error"
            try:
                outcome = await fn(ctx, *args, **kwargs)
                return outcome
            except Retry:
                outcome = "retry"
                raise
            finally:
                observed.JOBS.labels(name, outcome).inc()

        return run

    return wrap


def _retry_at(deadline: datetime) -> Retry:
    # Scheduled by a clock slightly ahead of the database's: run again at the deadline.
    return Retry(defer=max((deadline - datetime.now(UTC)).total_seconds(), 0.5))


@_observed(scheduling.EXPIRE_URL)
async def expire_public_url(ctx: dict[str, Any], url_id: int, version: int) -> str:
    outcome = await public_urls.expire(_resources(ctx), url_id, version)
    if outcome.not_before is not None:
        raise _retry_at(outcome.not_before)
    return "expired" if outcome.expired else "stale"


@_observed(scheduling.EXPIRE_FILE)
async def expire_file(ctx: dict[str, Any], file_id: str) -> str:
    res = _resources(ctx)
    if await files.expire_file(res, file_id):
        return "expired"
    deadline = await res.db.fetchval(
        "SELECT expires_at FROM files WHERE id = $1 AND deleted_at IS NULL", file_id
    )
    if deadline is not None:  # not yet due
        raise _retry_at(deadline)
    return "stale"
