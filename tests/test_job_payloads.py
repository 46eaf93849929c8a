"""The job queue holds data, not code: payloads are JSON, and a pickle planted in Redis is
refused by the worker without being unpickled."""

from __future__ import annotations

import json
import pickle
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from arq.constants import job_key_prefix, result_key_prefix
from arq.utils import timestamp_ms

from shared import scheduling
from shared.resources import Resources
from tests.conftest import WorkerHandle
from tests.helpers import wait_for


async def test_queued_jobs_are_json(res: Resources) -> None:
    job = scheduling.url_expiry(
        10**12 + uuid.uuid4().int % 10**9, 3, datetime.now(UTC) + timedelta(hours=1)
    )
    await scheduling.enqueue(res.arq, job)
    try:
        raw = await res.redis.get(job_key_prefix + job.job_id)
        payload = json.loads(raw)
        assert (payload["f"], payload["a"], payload["k"]) == (
            scheduling.EXPIRE_URL,
            list(job.args),
            {},
        )
    finally:
        await res.redis.delete(job_key_prefix + job.job_id)
        await res.redis.zrem(res.settings.arq_queue_name, job.job_id)


class _Planted:
    """Unpickling this creates a file: what an attacker's payload would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


async def test_a_pickled_job_is_refused_never_unpickled(
    res: Resources, worker: WorkerHandle, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    job_id = f"planted-{uuid.uuid4().hex[:8]}"
    payload = pickle.dumps(
        {"t": 1, "f": scheduling.EXPIRE_FILE, "a": (_Planted(marker),), "k": {}, "et": 0}
    )
    queue = res.settings.arq_queue_name
    await res.redis.set(job_key_prefix + job_id, payload, px=60_000)
    await res.redis.zadd(queue, {job_id: timestamp_ms()})
    try:

        async def handled() -> bool:
            return await res.redis.zscore(queue, job_id) is None

        await wait_for(handled, timeout=30, what="the worker to take the planted job")
        assert not marker.exists()
        result = await res.redis.get(result_key_prefix + job_id)
        assert result is not None and json.loads(result)["s"] is False  # failed, as JSON
    finally:
        await res.redis.delete(job_key_prefix + job_id, result_key_prefix + job_id)
        await res.redis.zrem(queue, job_id)
