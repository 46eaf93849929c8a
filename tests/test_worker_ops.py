"""The worker's private ops listener (WORKER_OPS_PORT): a heartbeat per process that fails
when one of its own loops is stuck, and only then (another replica stays healthy); and the
metrics it reports: expiry lag, reconcile passes, levels sampled into the minute buckets."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from shared import events, metrics
from shared.resources import Resources
from tests.conftest import Stack, WorkerHandle
from tests.helpers import call, create, png, upload, wait_for


async def _health(url: str) -> tuple[int, Any]:
    """(status, body) of a worker's /healthz; (0, None) while nothing listens yet."""
    try:
        async with aiohttp.ClientSession() as s:
            return await call(s, "GET", url + "/healthz")
    except aiohttp.ClientConnectorError:
        return 0, None


def _check(stack: Stack, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "worker", "--check"],
        env={**stack.env, "WORKER_OPS_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def two_workers(stack: Stack) -> Iterator[list[WorkerHandle]]:
    handles = [WorkerHandle(stack), WorkerHandle(stack)]
    # Stalled after 2 s; no reclaiming of another consumer's events within the test (the
    # second worker would take the stuck event over and get stuck on it too).
    for h in handles:
        h.start(WORKER_STALL_SECONDS="2", EVENT_CLAIM_IDLE_MS="600000")
    yield handles
    for h in handles:
        h.stop()


async def test_a_stuck_event_consumer_fails_its_own_heartbeat_and_no_other(
    stack: Stack, res: Resources, api: aiohttp.ClientSession, two_workers: list[WorkerHandle]
) -> None:
    urls = [w.ops_url for w in two_workers]
    names = {f"-{w.proc.pid}" for w in two_workers if w.proc is not None}

    async def both_consuming() -> bool:
        statuses = [(await _health(u))[0] for u in urls]
        if statuses != [200, 200]:
            return False  # (the group may not exist yet either)
        group = await res.redis.xinfo_consumers(events.STREAM, events.GROUP)
        joined = {n for n in names if any(c["name"].decode().endswith(n) for c in group)}
        return statuses == [200, 200] and joined == names

    await wait_for(both_consuming, timeout=30, what="two healthy workers in the consumer group")
    f = await upload(api, png())
    row = await res.db.fetchrow("SELECT object_key, team_id FROM files WHERE id = $1", f["id"])
    # Mark the file deleted in a transaction we keep open: the consumer that gets the event
    # waits on the row lock (for up to its 30 s statement timeout) and its loop stops turning.
    conn = await asyncpg.connect(stack.env["DATABASE_URL"])
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(
            "UPDATE files SET deleted_at = now(), delete_reason = 'deleted' WHERE id = $1",
            f["id"],
        )
        await events.publish(
            res.redis,
            events.FileEvent(
                events.FILE_DELETED, f["id"], row["object_key"], row["team_id"], "deleted"
            ),
        )
        reports: list[tuple[int, Any]] = []

        async def one_stalled() -> bool:
            reports[:] = [await _health(u) for u in urls]
            return any(status == 503 for status, _ in reports)

        await wait_for(one_stalled, timeout=15, what="the stuck worker's heartbeat to fail")
        stuck = next(i for i, (status, _) in enumerate(reports) if status == 503)
        fine = 1 - stuck
        assert reports[stuck][1]["stalled"] == ["events"], reports[stuck][1]
        assert reports[stuck][1]["seconds_since_beat"]["jobs"] < 2  # its other loops turn
        assert reports[fine][0] == 200 and reports[fine][1]["stalled"] == []
        # `filecdn worker --check` asks the worker on its own port: one fails, one passes.
        ports = [stack.worker_ops_ports[w.proc.pid] for w in two_workers if w.proc is not None]
        failed = _check(stack, ports[stuck])
        assert failed.returncode == 1 and '"stalled": ["events"]' in failed.stderr, failed
        assert _check(stack, ports[fine]).returncode == 0
    finally:
        await tx.rollback()
        await conn.close()

    async def recovered() -> bool:
        return [(await _health(u))[0] for u in urls] == [200, 200]

    await wait_for(recovered, timeout=15, what="the unstuck worker's heartbeat")


def test_worker_check_fails_when_no_worker_listens(stack: Stack) -> None:
    from cli.embedded import free_port

    done = _check(stack, free_port())
    assert done.returncode == 1 and "no worker answers" in done.stderr


async def test_worker_reports_expiry_lag_reconcile_passes_and_samples_levels(
    stack: Stack, res: Resources, api: aiohttp.ClientSession, worker: WorkerHandle
) -> None:
    f = await upload(api, png())
    assert (await create(api, f["id"], {"expires_after": 1}))[0] == 200

    async def scrape() -> str:
        try:
            async with aiohttp.ClientSession() as s:
                status, body = await call(s, "GET", worker.ops_url + "/metrics")
        except aiohttp.ClientConnectorError:
            return ""  # not listening yet
        assert status == 200
        return body.decode()  # type: ignore[no-any-return]

    async def expired_and_reconciled() -> bool:
        # The job may find the URL expired already (reconcile retires overdue rows too):
        # any outcome shows that it ran, and how late.
        text = await scrape()
        return (
            'filecdn_worker_jobs_total{function="expire_public_url",outcome=' in text
            and 'filecdn_worker_reconcile_runs_total{outcome="ok"}' in text
        )

    await wait_for(expired_and_reconciled, timeout=30, what="an expiry job and a reconcile pass")
    text = await scrape()
    assert 'filecdn_worker_expiry_lag_seconds_count{function="expire_public_url"}' in text
    assert 'filecdn_worker_loop_beat_age_seconds{loop="events"}' in text
    assert "filecdn_worker_reconcile_last_success_timestamp_seconds " in text
    buckets = await metrics.read(res.redis, minutes=3)
    assert sum(b.get("worker.expiry.runs", 0) for b in buckets.values()) >= 1
    assert sum(b.get("worker.expiry.lag_ms.le_inf", 0) for b in buckets.values()) >= 1
    assert sum(b.get("worker.reconcile.runs", 0) for b in buckets.values()) >= 1
    # Levels are sampled once a minute by one worker (this one, or one before it).
    assert any("state.urls.active" in b and "state.queue.depth" in b for b in buckets.values())
