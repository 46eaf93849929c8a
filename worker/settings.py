"""The arq `Worker`, built from our Settings: typed keywords, explicit timeouts and tries.

`on_startup` opens the shared resources once and starts the stream consumer, the
reconcile loop, the link-stats fold, the state sampler and the ops listener
(WORKER_OPS_PORT) beside arq's job runner; `on_shutdown` stops them and closes everything.
arq's poll loop beats the heartbeat once per turn (`HeartbeatWorker.heart_beat`, arq's own
per-turn hook); the other loops beat it themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from arq.connections import ArqRedis
from arq.worker import Worker, func
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import scheduling
from shared.redis_client import create_redis
from shared.resources import open_resources
from shared.settings import Settings
from worker import events, jobs, link_stats_fold, ops, reconcile, samples
from worker.failures import log_failure

log = structlog.get_logger(__name__)

# An expiry job is one short transaction (plus an event or a job after it).
JOB_TIMEOUT_SECONDS = 60
# Each try is idempotent; a job that ran early retries itself at the deadline (a try each).
MAX_TRIES = 10
KEEP_RESULT_SECONDS = 60
POLL_DELAY_SECONDS = 0.25
# arq's per-queue health key (`arq.worker.check_health`; arq's default is an hour). Our
# probes use this process's own heartbeat instead (worker/ops.py).
HEALTH_CHECK_INTERVAL_SECONDS = 30
# How long a stopping worker lets its loops finish the pass under way (the event consumer
# blocks up to 1 s on its stream).
LOOPS_GRACE_SECONDS = 5.0
# Between two polls of a Redis that is down, as the worker's other loops wait.
REDIS_RETRY_SECONDS = 1.0


def job_queue(settings: Settings) -> ArqRedis:
    """arq's own connection, opened like every other Redis client (`create_redis`: the URL's
    user, password, TLS and database, bounded waits), reading and writing JSON payloads."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set: the worker's job queue lives in Redis")
    return scheduling.queue(
        create_redis(settings, timeout=settings.redis_timeout), settings.arq_queue_name
    )


class HeartbeatWorker(Worker):
    """arq's Worker, beating this process's heartbeat once per turn of its poll loop."""

    def __init__(self, *args: Any, heartbeat: ops.Heartbeat, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeat = heartbeat

    async def heart_beat(self) -> None:
        self.heartbeat.beat("jobs")
        await super().heart_beat()

    async def _poll_iteration(self) -> None:
        """One turn of arq's poll loop. arq lets a Redis error escape its loop, which ended
        the worker process on every Redis restart (and `filecdn run` with it); a Redis that
        is down or hung makes this turn wait and the next one try again, as the event
        consumer and reconcile loops do. Jobs already running carry on meanwhile."""
        try:
            await super()._poll_iteration()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self.heartbeat.beat("jobs")  # waiting for a dependency is not being stuck
            log_failure(log, "job poll", exc)
            await asyncio.sleep(REDIS_RETRY_SECONDS)


def build_worker(settings: Settings) -> Worker:
    """The worker process's arq runner (build it inside the event loop it will run on)."""
    heartbeat = ops.Heartbeat(settings.worker_stall_seconds)

    async def on_startup(ctx: dict[Any, Any]) -> None:
        stack = contextlib.AsyncExitStack()
        ctx["stack"] = stack
        res = await stack.enter_async_context(open_resources(settings))
        await res.storage.ensure_bucket()
        ctx["resources"] = res
        listener = await ops.start(settings, heartbeat)
        stack.push_async_callback(listener.cleanup)
        stop = asyncio.Event()
        ctx["stop"] = stop
        name = events.consumer_name()
        ctx["loops"] = [
            asyncio.create_task(events.consume(res, name, stop, lambda: heartbeat.beat("events"))),
            asyncio.create_task(
                reconcile.loop(res, stop, lambda: heartbeat.beat("reconcile"), worker=name)
            ),
            asyncio.create_task(link_stats_fold.loop(res, stop, lambda: heartbeat.beat("links"))),
            asyncio.create_task(samples.loop(res, stop)),
        ]

    async def on_shutdown(ctx: dict[Any, Any]) -> None:
        ctx["stop"].set()
        # A pass under way finishes (a fold cut between its claim and its finish is only
        # taken up LEFTOVER_AGE_MS later); one stuck on a dependency is cut.
        _, stuck = await asyncio.wait(ctx["loops"], timeout=LOOPS_GRACE_SECONDS)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*ctx["loops"], return_exceptions=True)
        await ctx["stack"].aclose()

    return HeartbeatWorker(
        heartbeat=heartbeat,
        functions=[
            func(
                jobs.expire_public_url,
                name=scheduling.EXPIRE_URL,
                timeout=JOB_TIMEOUT_SECONDS,
                max_tries=MAX_TRIES,
            ),
            func(
                jobs.expire_file,
                name=scheduling.EXPIRE_FILE,
                timeout=JOB_TIMEOUT_SECONDS,
                max_tries=MAX_TRIES,
            ),
        ],
        redis_pool=job_queue(settings),
        job_serializer=scheduling.serialize,
        job_deserializer=scheduling.deserialize,
        queue_name=settings.arq_queue_name,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        job_timeout=JOB_TIMEOUT_SECONDS,
        max_tries=MAX_TRIES,
        keep_result=KEEP_RESULT_SECONDS,
        poll_delay=POLL_DELAY_SECONDS,
        health_check_interval=HEALTH_CHECK_INTERVAL_SECONDS,
        handle_signals=True,
    )
