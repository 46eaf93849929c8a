"""Public URLs under concurrency and failure: races, quota, expiry, Redis loss, crashes."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp

from shared import events, metrics, scheduling, token_cache
from shared.resources import Resources
from tests.conftest import Stack, TeamKey, WorkerHandle
from tests.helpers import (
    call,
    create,
    fetch,
    png,
    race_revocation,
    revoke,
    until_past,
    upload,
    wait_for,
)


async def test_concurrent_creates_on_one_file_give_one_token(
    api: aiohttp.ClientSession, res: Resources
) -> None:
    f = await upload(api, png())
    answers = await asyncio.gather(*(create(api, f["id"], {}) for _ in range(50)))
    assert {status for status, _ in answers} == {200}
    assert len({body["public_url"] for _, body in answers}) == 1
    assert (
        await res.db.fetchval("SELECT count(*) FROM public_urls WHERE file_id = $1", f["id"]) == 1
    )


async def _insert_files(res: Resources, team: TeamKey, n: int) -> list[str]:
    """n eligible PNG rows (bytes need not exist in S3 for create; the edge is not hit)."""
    ids = [f"file_{uuid.uuid4()}" for _ in range(n)]
    await res.db.executemany(
        """INSERT INTO files (id, team_id, filename, bytes, content_type, sniffed_type, sha256,
                              object_key)
           VALUES ($1, $2, 'q.png', 100, 'image/png', 'image/png', '\\x00', 'objects/' || $1)""",
        [(i, team.team.id) for i in ids],
    )
    return ids


async def test_quota_holds_under_1100_concurrent_creates(
    stack: Stack, res: Resources, team: TeamKey
) -> None:
    quota = stack.settings.public_url_quota
    assert quota == 1000
    ids = await _insert_files(res, team, quota + 100)
    conn = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(
        base_url=stack.api_url, connector=conn, headers={"Authorization": f"Bearer {team.key}"}
    ) as api:
        answers = await asyncio.gather(*(create(api, i, {}) for i in ids))
        statuses = [s for s, _ in answers]
        assert statuses.count(200) == quota and statuses.count(429) == 100
        refused = next(b for s, b in answers if s == 429)
        assert refused == {
            "code": "Some resource has been exhausted",
            "error": f"active public URL limit ({quota}) reached",
        }
        live = await res.db.fetchval(
            "SELECT count(*) FROM public_urls WHERE team_id = $1 AND revoked_at IS NULL",
            team.team.id,
        )
        assert live == quota
        # At the limit: updating an existing URL is not a new one; a revoke frees a slot.
        granted = [i for i, (s, _) in zip(ids, answers, strict=True) if s == 200]
        denied = [i for i, (s, _) in zip(ids, answers, strict=True) if s == 429]
        assert (await create(api, granted[0], {"expires_after": 3600}))[0] == 200
        assert (await create(api, denied[0], {}))[0] == 429
        await revoke(api, granted[1])
        assert (await create(api, denied[0], {}))[0] == 200
        assert (await create(api, denied[1], {}))[0] == 429
        # A URL past its deadline is no longer active, nor is one whose file was deleted.
        _, short = await create(api, granted[2], {"expires_after": 1})
        await until_past(res, short["expires_at"])
        assert (await create(api, denied[1], {}))[0] == 200
        assert (await create(api, denied[2], {}))[0] == 429
        assert (await call(api, "DELETE", f"/v1/files/{granted[3]}"))[0] == 200
        assert (await create(api, denied[2], {}))[0] == 200
    await res.db.execute(
        "UPDATE public_urls SET revoked_at = now() WHERE team_id = $1", team.team.id
    )


async def test_short_lived_url_dies_at_its_deadline_without_the_worker(
    api: aiohttp.ClientSession, res: Resources, stack: Stack
) -> None:
    f = await upload(api, png())
    _, made = await create(api, f["id"], {"expires_after": 2})
    deadline = made["expires_at"]
    assert (await fetch(made["public_url"]))[0] == 200
    await until_past(res, deadline)
    assert (await fetch(made["public_url"]))[0] == 404
    _, got = await call(api, "GET", f"/v1/files/{f['id']}")
    assert got["public_url"] is None
    token = made["public_url"].split("/")[-2]
    assert (
        await res.db.fetchval("SELECT revoked_at FROM public_urls WHERE token = $1", token) is None
    )  # no worker yet
    worker = WorkerHandle(stack)
    worker.start()
    try:

        async def marked() -> bool:
            return (
                await res.db.fetchval(
                    "SELECT revoke_reason FROM public_urls WHERE token = $1", token
                )
                == "expired"
            )

        await wait_for(marked, timeout=20, what="the worker marking the URL expired")
    finally:
        worker.stop()


async def test_no_reader_sees_200_after_revoke_returns(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png())
    _, made = await create(api, f["id"], {})
    await race_revocation(made["public_url"], lambda: revoke(api, f["id"]))


async def test_no_reader_sees_200_after_delete_returns(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png())
    _, made = await create(api, f["id"], {})
    await race_revocation(made["public_url"], lambda: call(api, "DELETE", f"/v1/files/{f['id']}"))


async def test_redis_flushall_is_repaired_by_reconcile(
    api: aiohttp.ClientSession, res: Resources, stack: Stack, worker: WorkerHandle
) -> None:
    live = []
    for _ in range(5):
        f = await upload(api, png())
        live.append((await create(api, f["id"], {"expires_after": 3600}))[1]["public_url"])
    indefinite = await upload(api, png())
    live.append((await create(api, indefinite["id"], {}))[1]["public_url"])
    dead_file = await upload(api, png())
    dead = (await create(api, dead_file["id"], {}))[1]["public_url"]
    await revoke(api, dead_file["id"])

    await res.redis.flushall()
    assert {(await fetch(u))[0] for u in live} == {404}  # fail closed meanwhile

    async def restored() -> bool:
        return {(await fetch(u))[0] for u in live} == {200}

    started = time.monotonic()
    await wait_for(restored, timeout=stack.settings.reconcile_interval + 5, what="reconcile")
    assert time.monotonic() - started <= stack.settings.reconcile_interval + 5
    assert (await fetch(dead))[0] == 404
    # The projections are whole again: expiry jobs and the consumer group are back.
    token = live[0].split("/")[-2]
    url_id, version = await res.db.fetchrow(
        "SELECT id, version FROM public_urls WHERE token = $1", token
    )
    assert await res.redis.exists(f"arq:job:url-expiry:{url_id}:{version}")
    groups = await res.redis.xinfo_groups(events.STREAM)
    assert any(g["name"] in (events.GROUP, events.GROUP.encode()) for g in groups)
    ttl = await res.redis.pttl(token_cache.key(token))
    assert 0 < ttl <= 3600_000


async def test_jobs_rescheduled_in_bulk_are_the_jobs_arq_queues(res: Resources) -> None:
    from arq.jobs import Job as ArqJob
    from arq.utils import to_unix_ms

    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    base = 10**12 + uuid.uuid4().int % 10**9  # ids no row has
    held, fresh = scheduling.url_expiry(base, 1, at), scheduling.url_expiry(base + 1, 1, at)
    await scheduling.enqueue(res.arq, held)  # arq's own way
    try:
        assert await scheduling.enqueue_many(res.arq, [held, fresh]) == 1  # held is skipped
        queue = res.settings.arq_queue_name
        theirs = await ArqJob(
            held.job_id, res.arq, _queue_name=queue, _deserializer=scheduling.deserialize
        ).info()
        ours = await ArqJob(
            fresh.job_id, res.arq, _queue_name=queue, _deserializer=scheduling.deserialize
        ).info()
        assert theirs is not None and ours is not None
        assert (ours.function, ours.args, ours.kwargs, ours.score) == (
            theirs.function,
            (base + 1, 1),
            theirs.kwargs,
            to_unix_ms(at),
        )
        ttl = await res.arq.pttl(f"arq:job:{fresh.job_id}")
        assert 24 * 3600_000 < ttl <= 25 * 3600_000  # arq's: a day past its start
    finally:
        await res.arq.delete(f"arq:job:{held.job_id}", f"arq:job:{fresh.job_id}")
        await res.arq.zrem(res.settings.arq_queue_name, held.job_id, fresh.job_id)


async def test_killed_worker_loses_no_event_and_deletes_each_object_once(
    stack: Stack, res: Resources, team: TeamKey, api: aiohttp.ClientSession
) -> None:
    n = 150
    made = await asyncio.gather(*(upload(api, png(256)) for _ in range(n)))
    ids = [f["id"] for f in made]
    keys = [f"objects/{i}" for i in ids]

    async def deleted_count() -> int:
        return int(
            await res.db.fetchval(
                "SELECT count(*) FROM files WHERE id = ANY($1) AND object_deleted_at IS NOT NULL",
                ids,
            )
        )

    async def counted() -> int:
        return sum(
            b.get("objects.deleted", 0) for b in (await metrics.read(res.redis, minutes=5)).values()
        )

    base_count = await counted()
    for i in ids:  # events queue up while no worker runs
        await call(api, "DELETE", f"/v1/files/{i}")
    worker = WorkerHandle(stack)
    worker.start()
    try:

        async def some_done() -> bool:
            return await deleted_count() >= 10

        await wait_for(some_done, timeout=30, what="the worker starting on the events")
        worker.kill()  # mid-stream: some entries are delivered but not acknowledged
        done_at_kill = await deleted_count()
        assert done_at_kill < n, "the worker finished before it could be killed"
        worker.start()

        async def all_done() -> bool:
            return await deleted_count() == n

        await wait_for(all_done, timeout=60, what="every object deleted after restart")
    finally:
        worker.stop()
    remaining = set(keys) & {k async for k, _ in res.storage.list_objects("objects/")}
    assert not remaining
    pending = await res.redis.xpending(events.STREAM, events.GROUP)
    assert pending["pending"] == 0
    # Each object counted once (a kill between commit and count can only lose one).
    assert n - 1 <= await counted() - base_count <= n


async def test_reconcile_drops_cache_entries_of_dead_urls(
    api: aiohttp.ClientSession, res: Resources, worker: WorkerHandle
) -> None:
    """A stale entry (e.g. written back by hand or by a lost race) never outlives a pass."""
    f = await upload(api, png())
    _, made = await create(api, f["id"], {})
    token = made["public_url"].split("/")[-2]
    raw = await res.redis.get(token_cache.key(token))
    assert raw is not None
    record = token_cache.UrlRecord.decode(raw)
    await revoke(api, f["id"])
    await res.tokens.put(token, record)  # resurrect it behind the API's back
    orphan = "Z" * 22  # an entry no row has ever had
    await res.tokens.put(orphan, record)

    async def dropped() -> bool:
        return not await res.redis.exists(token_cache.key(token), token_cache.key(orphan))

    await wait_for(dropped, timeout=15, what="reconcile removing dead entries")


async def test_sweep_removes_orphan_objects_and_finishes_lost_deletions(
    api: aiohttp.ClientSession, res: Resources, stack: Stack
) -> None:
    orphan_key = f"objects/file_{uuid.uuid4()}"
    writer = res.storage.writer(orphan_key)
    await writer.write(b"no row points here")
    await writer.finish()
    # A deletion whose event was lost: the row says deleted, the object is still there.
    f = await upload(api, png())
    await res.db.execute(
        """UPDATE files SET deleted_at = now() - interval '2 minutes', delete_reason = 'deleted'
            WHERE id = $1""",
        f["id"],
    )
    lost_key = f"objects/{f['id']}"
    worker = WorkerHandle(stack)
    worker.start(SWEEP_GRACE_SECONDS="1")
    try:

        async def swept() -> bool:
            return (
                await res.storage.stat(orphan_key) is None
                and await res.storage.stat(lost_key) is None
            )

        await wait_for(swept, timeout=20, what="the sweep")
    finally:
        worker.stop()
    assert await res.db.fetchval(
        "SELECT object_deleted_at IS NOT NULL FROM files WHERE id = $1", f["id"]
    )


async def test_file_expiry_kills_its_inherited_url(
    api: aiohttp.ClientSession, res: Resources, worker: WorkerHandle
) -> None:
    f = await upload(api, png(), before={"expires_after": "2"})
    _, made = await create(api, f["id"], {})
    assert made["expires_at"] == f["expires_at"]
    assert (await fetch(made["public_url"]))[0] == 200
    await until_past(res, f["expires_at"])
    assert (await fetch(made["public_url"]))[0] == 404

    async def retired() -> bool:
        row = await res.db.fetchrow(
            """SELECT f.delete_reason, u.revoked_at IS NOT NULL AS url_dead
                 FROM files f JOIN public_urls u ON u.file_id = f.id WHERE f.id = $1""",
            f["id"],
        )
        return bool(row["delete_reason"] == "expired" and row["url_dead"])

    await wait_for(retired, timeout=20, what="file expiry retiring the file and its URL")
