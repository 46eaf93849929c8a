"""The worker outlives a Redis restart: its job poll loop waits for Redis and carries on,
instead of ending the process (found by the chaos run, `tests/chaos/`)."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from shared import scheduling
from shared.resources import open_resources
from tests.conftest import Stack
from tests.helpers import OwnRedis, until, wait_for_log


async def test_the_worker_keeps_polling_for_jobs_through_a_redis_restart(
    stack: Stack, own_redis: OwnRedis
) -> None:
    worker = stack.start_worker(REDIS_URL=own_redis.url)
    name = next(n for n, p, _ in stack.sup.children if p is worker)
    healthz = f"http://127.0.0.1:{stack.worker_ops_ports[worker.pid]}/healthz"

    async def polling() -> bool:  # every loop has come round, the job poll loop too
        try:
            async with aiohttp.ClientSession() as s, s.get(healthz) as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await until(polling, "the worker to start", timeout=60)
        own_redis.stop()
        await wait_for_log(stack, name, event="job poll waiting", timeout=30)
        assert worker.poll() is None, "the worker exited when Redis went away"

        own_redis.start()  # empty: a restart without persistence
        # A job for a URL that does not exist: it runs, finds nothing and is done.
        job = scheduling.url_expiry(0, 1, datetime.now(UTC))
        own = stack.settings.model_copy(update={"redis_url": own_redis.url})
        async with open_resources(own) as res:  # its queue, as the API queues jobs
            await scheduling.enqueue(res.arq, job)

        async def ran() -> bool:
            return not await own_redis.client.zscore(stack.settings.arq_queue_name, job.job_id)

        await until(ran, "the job queued after the restart to run", timeout=30)
        assert worker.poll() is None
    finally:
        stack.sup.stop(name)
