"""Per-link stats: the worker folds the edges' counts into PostgreSQL exactly once, whatever
crashes in between, and `GET /v1/files/{id}/public-url` shows them.

The edges' side is played here by `shared.link_stats.add_to_pipeline`, exactly what an edge
process calls once a second; the fold runs in-process (to crash it at chosen points) and, in
one test, in a real worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from shared import link_stats
from shared.link_stats import LinkCount
from shared.resources import Resources
from tests.conftest import Stack, TeamKey, WorkerHandle, new_team
from tests.helpers import (
    Public,
    call,
    create,
    edge_workers,
    gets_over_workers,
    mp4,
    own_edge,
    png,
    revoke,
    share,
    until,
    until_past,
    upload,
    wait_for,
)
from worker import link_stats_fold
from worker.link_stats_fold import REGISTRY_KEY, Folder

MISSING = "file_00000000-0000-4000-8000-000000000000"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in unix ms: a minute boundary


async def flush(res: Resources, counts: dict[str, LinkCount], now_ms: int) -> None:
    """One edge's once-a-second flush."""
    pipe = res.redis.pipeline(transaction=False)
    link_stats.add_to_pipeline(pipe, counts, now_ms)
    await pipe.execute()


async def two_edges(res: Resources, tokens: Sequence[str], rounds: int) -> dict[str, LinkCount]:
    """Two edges flushing interleaved counts for the tokens; returns what they served."""
    served = {t: LinkCount() for t in tokens}
    for r in range(rounds):
        for edge in (0, 1):
            counts = {}
            for i, t in enumerate(tokens):
                hits, size = 1 + (r + edge + i) % 3, 1000 * (edge + 1) + i
                counts[t] = LinkCount(hits, hits * size)
                served[t].hits += hits
                served[t].bytes += hits * size
            await flush(res, counts, T0 + r * 20_000 + edge)
    return served


async def totals(res: Resources, token: str) -> tuple[int, int, datetime | None]:
    row = await res.db.fetchrow(
        "SELECT hits, bytes_sent, last_accessed_at FROM public_urls WHERE token = $1", token
    )
    return row["hits"], row["bytes_sent"], row["last_accessed_at"]


async def assert_exact(res: Resources, served: dict[str, LinkCount]) -> None:
    """Each URL's totals are what the edges served, and no folding key is left behind."""
    for t, c in served.items():
        assert (await totals(res, t))[:2] == (c.hits, c.bytes)
    assert await nothing_left(res)


async def minutes(res: Resources, token: str) -> dict[datetime, tuple[int, int]]:
    rows = await res.db.fetch(
        """SELECT m.minute, m.hits, m.bytes FROM public_url_minutes m
             JOIN public_urls u ON u.id = m.url_id WHERE u.token = $1""",
        token,
    )
    return {r["minute"]: (r["hits"], r["bytes"]) for r in rows}


async def nothing_left(res: Resources) -> bool:
    keys = [k async for k in res.redis.scan_iter(match=f"{link_stats.FOLDING_PREFIX}*")]
    return not keys and not await res.redis.zcard(REGISTRY_KEY)


@pytest.fixture(autouse=True)
async def no_leftovers(res: Resources) -> None:
    """Start from nothing registered: an earlier test's worker, stopped mid-pass, may have
    left a folding key that no fold takes up for LEFTOVER_AGE_MS, which these tests would
    count as their own leftover."""
    folder = Folder(res, leftover_age_ms=0)
    await wait_for(lambda: _fold_then_check(folder), timeout=10, what="earlier tests' folding keys")


async def _fold_then_check(folder: Folder) -> bool:
    await folder.fold_pass()
    return await nothing_left(folder.res)


@pytest.fixture
async def urls(api: aiohttp.ClientSession) -> list[Public]:
    return [await share(api, png()) for _ in range(3)]


async def test_two_edges_counts_fold_to_exact_totals_and_minutes(
    res: Resources, urls: list[Public]
) -> None:
    tokens = [u.token for u in urls]
    served = await two_edges(res, tokens, rounds=6)  # 2 minutes of flushes
    stats = await Folder(res).fold_pass()
    assert stats.tokens >= 3 and stats.already_folded == 0
    for t in tokens:
        hits, sent, last = await totals(res, t)
        assert (hits, sent) == (served[t].hits, served[t].bytes)
        assert last == datetime.fromtimestamp((T0 + 5 * 20_000 + 1) / 1000, UTC)
        # All counts of one pending hash land in the minute of its last access.
        assert await minutes(res, t) == {
            datetime.fromtimestamp(T0 / 1000 + 60, UTC): (served[t].hits, served[t].bytes)
        }
    assert await nothing_left(res)
    # A second batch adds to the totals and to its own minute.
    await flush(res, {tokens[0]: LinkCount(2, 10)}, T0 + 300_000)
    await Folder(res).fold_pass()
    assert (await totals(res, tokens[0]))[:2] == (
        served[tokens[0]].hits + 2,
        served[tokens[0]].bytes + 10,
    )
    assert len(await minutes(res, tokens[0])) == 2


async def test_a_crash_after_the_rename_is_folded_once_by_the_next_pass(
    res: Resources, urls: list[Public]
) -> None:
    tokens = [u.token for u in urls]
    served = await two_edges(res, tokens, rounds=3)
    crashed = Folder(res)
    assert await crashed.claim(int(time.time() * 1000)) is not None  # ... and then it died
    more = await two_edges(res, tokens[:1], rounds=1)  # a new pending hash meanwhile
    # Another worker, once the key is old enough to be a leftover.
    await Folder(res, leftover_age_ms=0).fold_pass()
    served[tokens[0]].hits += more[tokens[0]].hits
    served[tokens[0]].bytes += more[tokens[0]].bytes
    await assert_exact(res, served)


async def test_a_fresh_folding_key_is_left_to_its_own_worker(
    res: Resources, urls: list[Public]
) -> None:
    await two_edges(res, [urls[0].token], rounds=1)
    key = await Folder(res).claim(int(time.time() * 1000))
    assert key is not None
    await Folder(res).fold_pass()  # another worker: the key is not a leftover yet
    assert await totals(res, urls[0].token) == (0, 0, None)
    await Folder(res, leftover_age_ms=0).fold_pass()
    assert (await totals(res, urls[0].token))[0] > 0


async def test_a_crash_inside_the_transaction_adds_nothing_and_is_folded_once_later(
    res: Resources, urls: list[Public], monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = [u.token for u in urls]
    served = await two_edges(res, tokens, rounds=2)
    folder = Folder(res, leftover_age_ms=0)
    real_add = folder.add

    async def add_then_die(conn: Any, counts: Any) -> int:
        await real_add(conn, counts)  # the UPDATEs ran; the commit never comes
        raise ConnectionResetError("worker lost PostgreSQL before commit")

    monkeypatch.setattr(folder, "add", add_then_die)
    with pytest.raises(ConnectionResetError):
        await folder.fold_pass()
    assert await totals(res, tokens[0]) == (0, 0, None)
    assert await minutes(res, tokens[0]) == {}
    monkeypatch.undo()
    await Folder(res, leftover_age_ms=0).fold_pass()
    await assert_exact(res, served)


async def test_a_crash_after_the_commit_never_adds_twice(
    res: Resources, urls: list[Public]
) -> None:
    tokens = [u.token for u in urls]
    served = await two_edges(res, tokens, rounds=2)
    folder = Folder(res)
    key = await folder.claim(int(time.time() * 1000))
    assert key is not None
    raw = await res.redis.hgetall(key)
    await folder.commit(key, link_stats.parse(raw))  # committed; died before DEL
    again = await Folder(res, leftover_age_ms=0).fold_pass()
    assert again.already_folded == 1
    await assert_exact(res, served)


async def test_two_workers_folding_the_same_leftover_add_it_once(
    res: Resources, urls: list[Public]
) -> None:
    tokens = [u.token for u in urls]
    served = await two_edges(res, tokens, rounds=2)
    assert await Folder(res).claim(int(time.time() * 1000)) is not None
    results = await asyncio.gather(*(Folder(res, leftover_age_ms=0).fold_pass() for _ in range(4)))
    assert sum(r.tokens for r in results) == 3  # one of them added; the rest found it done
    await assert_exact(res, served)


async def test_a_big_pending_hash_is_folded_in_bounded_parts(
    res: Resources, api: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link_stats_fold, "PART_TOKENS", 4)
    urls = [await share(api, png()) for _ in range(10)]
    unknown = [f"unknownToken{i:010d}" for i in range(7)]
    tokens = [u.token for u in urls] + unknown
    served = await two_edges(res, tokens, rounds=2)
    stats = await Folder(res).fold_pass()
    assert stats.keys >= 5  # 17 tokens in parts of 4, then the emptied key itself
    assert stats.unknown_tokens == 7
    await assert_exact(res, {t: served[t] for t in tokens[:10]})


async def test_a_split_interrupted_half_way_loses_and_doubles_nothing(
    res: Resources, api: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link_stats_fold, "PART_TOKENS", 3)
    urls = [await share(api, png()) for _ in range(8)]
    tokens = [u.token for u in urls]
    served = await two_edges(res, tokens, rounds=1)
    folder = Folder(res)
    key = await folder.claim(int(time.time() * 1000))
    assert key is not None
    parts = await folder.split(key)  # then died: parts and the rest are all registered
    assert len(parts) == 3
    await Folder(res).commit(parts[0], link_stats.parse(await res.redis.hgetall(parts[0])))
    await Folder(res, leftover_age_ms=0).fold_pass()
    await assert_exact(res, served)


async def test_two_workers_splitting_one_big_key_move_each_count_once(
    res: Resources, api: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link_stats_fold, "PART_TOKENS", 2)
    urls = [await share(api, png()) for _ in range(9)]
    served = await two_edges(res, [u.token for u in urls], rounds=2)
    key = await Folder(res).claim(int(time.time() * 1000))
    assert key is not None and link_stats_fold.is_big(key)
    results = await asyncio.gather(
        *(Folder(res, leftover_age_ms=0).fold_key(key) for _ in range(3))
    )
    assert sum(r.tokens for r in results) == 9
    await assert_exact(res, served)


async def test_revoked_urls_keep_their_late_counts_and_unknown_tokens_are_dropped(
    res: Resources, api: aiohttp.ClientSession, urls: list[Public]
) -> None:
    gone = urls[0]
    assert (await revoke(api, gone.file_id))[1]["revoked"] is True
    await flush(
        res,
        {gone.token: LinkCount(3, 300), "neverIssuedToken000000": LinkCount(5, 500)},
        T0,
    )
    await res.redis.hset(link_stats.PENDING_KEY, mapping={"garbage": "1", "h:x": "NaN"})
    stats = await Folder(res).fold_pass()
    assert stats.unknown_tokens == 1
    assert (await totals(res, gone.token))[:2] == (3, 300)
    assert await nothing_left(res)


async def test_retention_drops_old_minutes_and_fold_records(
    res: Resources, urls: list[Public]
) -> None:
    from worker import retention

    url_id, team_id = await res.db.fetchrow(
        "SELECT id, team_id FROM public_urls WHERE token = $1", urls[0].token
    )
    await res.db.execute(
        """INSERT INTO public_url_minutes (url_id, team_id, minute, hits, bytes)
           VALUES ($1, $2, date_trunc('minute', now() - interval '30 days'), 1, 1),
                  ($1, $2, date_trunc('minute', now()), 1, 1)""",
        url_id,
        team_id,
    )
    old_ms = int((time.time() - 30 * 86400) * 1000)
    old_key, new_key = link_stats_fold.folding_key(old_ms), link_stats_fold.folding_key(T0 * 2)
    await res.db.executemany(
        "INSERT INTO link_stats_folds (fold_key) VALUES ($1)", [(old_key,), (new_key,)]
    )
    stats = await retention.sweep(res)
    assert stats["url_minutes_deleted"] >= 1 and stats["fold_records_deleted"] >= 1
    assert len(await minutes(res, urls[0].token)) == 1
    kept = await res.db.fetch(
        "SELECT fold_key FROM link_stats_folds WHERE fold_key = ANY($1)", [old_key, new_key]
    )
    assert [r["fold_key"] for r in kept] == [new_key]


# --- GET /v1/files/{id}/public-url ----------------------------------------------------------


async def test_the_worker_folds_within_seconds_and_the_endpoint_shows_it(
    res: Resources, api: aiohttp.ClientSession, worker: WorkerHandle
) -> None:
    u = await share(api, png())
    status, before = await call(api, "GET", f"/v1/files/{u.file_id}/public-url")
    assert status == 200
    assert before == {
        "file_id": u.file_id,
        "public_url": u.url,
        "expires_at": None,
        "created_at": before["created_at"],
        "hits": 0,
        "bytes_sent": 0,
        "last_accessed_at": None,
    }
    assert abs(before["created_at"] - time.time()) < 60
    now_ms = int(time.time() * 1000)
    await flush(res, {u.token: LinkCount(4, 4096)}, now_ms)
    await flush(res, {u.token: LinkCount(1, 100)}, now_ms + 900)

    async def folded() -> bool:
        return (await call(api, "GET", f"/v1/files/{u.file_id}/public-url"))[1]["hits"] == 5

    await wait_for(folded, timeout=10, what="the worker's fold")
    _, after = await call(api, "GET", f"/v1/files/{u.file_id}/public-url")
    assert (after["hits"], after["bytes_sent"]) == (5, 4196)
    assert after["last_accessed_at"] == (now_ms + 900) // 1000


async def test_a_worker_stopped_mid_fold_finishes_its_pass_and_leaves_no_folding_key(
    stack: Stack, res: Resources
) -> None:
    """A rollout stops workers at any moment: the pass under way ends before the worker does,
    rather than leaving a registered key for another worker LEFTOVER_AGE_MS later."""
    # A backlog (the worker was down) big enough that its pass, split into parts of a
    # transaction each, takes most of a second; it appears whole once the worker is up, so
    # that one pass claims all of it.
    counts = {f"notAToken{i:08d}": LinkCount(1, 10) for i in range(30_000)}
    await flush(res, counts, int(time.time() * 1000))
    backlog = f"{link_stats.PENDING_KEY}:test-backlog"
    await res.redis.rename(link_stats.PENDING_KEY, backlog)
    worker = WorkerHandle(stack)
    worker.start()
    try:
        await wait_for(lambda: _healthy(worker), timeout=30, what="the worker")
        await res.redis.rename(backlog, link_stats.PENDING_KEY)  # all of it, at once
        deadline = time.monotonic() + 30
        while not await res.redis.zcard(REGISTRY_KEY):  # claimed: the pass has begun
            assert time.monotonic() < deadline, "the worker did not claim the counts"
            await asyncio.sleep(0.001)
    finally:
        await asyncio.to_thread(worker.stop)  # SIGTERM, mid-pass
    assert await nothing_left(res)
    assert not await res.redis.exists(link_stats.PENDING_KEY)


async def _healthy(worker: WorkerHandle) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(worker.ops_url + "/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def test_gets_over_two_edge_workers_are_exact_at_the_endpoint_within_seconds(
    stack: Stack, res: Resources, api: aiohttp.ClientSession, worker: WorkerHandle
) -> None:
    """End to end: real edge workers count, the real worker folds, the API answers."""
    small = await share(api, png(5000))
    large = await share(api, mp4(300_000), "v.mp4")
    with own_edge(stack, workers=2) as edge:
        await until(lambda: len(edge_workers(edge)) == 2, "two listening workers")
        served = await gets_over_workers(edge, [large, small], 60)
        expected = {p.file_id: served[p.token] for p in (small, large)}
        async with aiohttp.ClientSession() as s:
            # Not counted: HEAD, and a 304.
            async with s.head(edge.public(small)) as r:
                etag = r.headers["ETag"]
            async with s.get(edge.public(small), headers={"If-None-Match": etag}) as r:
                assert r.status == 304
        served_by = {e["process"] for e in edge.access() if e["status"] in (200, 206)}
        assert served_by == {"edge-0", "edge-1"}

    async def shown() -> dict[str, list[int]]:
        out = {}
        for file_id in expected:
            _, body = await call(api, "GET", f"/v1/files/{file_id}/public-url")
            out[file_id] = [body["hits"], body["bytes_sent"]]
        return out

    async def exact() -> bool:
        return await shown() == expected

    await wait_for(exact, timeout=10, what="exact counts at the endpoint")
    # Nothing left to fold, and the counts stay exact (no second addition).
    await wait_for(lambda: nothing_left(res), timeout=5, what="the fold to finish")
    assert not await res.redis.exists(link_stats.PENDING_KEY)
    assert await shown() == expected


async def test_the_endpoint_shows_the_urls_own_deadline(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png())
    _, made = await create(api, f["id"], {"expires_after": 7200})
    _, got = await call(api, "GET", f"/v1/files/{f['id']}/public-url")
    assert got["expires_at"] == made["expires_at"] and got["public_url"] == made["public_url"]


async def test_every_way_of_having_no_url_is_the_same_404(
    api: aiohttp.ClientSession, res: Resources, stack: Stack, team: TeamKey
) -> None:
    def no_url(file_id: str) -> dict[str, str]:
        return {
            "code": "Some requested entity was not found",
            "error": f"file {file_id} has no public URL",
        }

    async def get(session: aiohttp.ClientSession, file_id: str) -> tuple[int, Any]:
        return await call(session, "GET", f"/v1/files/{file_id}/public-url")

    plain = await upload(api, png())
    assert await get(api, plain["id"]) == (404, no_url(plain["id"]))
    assert await get(api, MISSING) == (404, no_url(MISSING))
    revoked = await share(api, png())
    await revoke(api, revoked.file_id)
    assert await get(api, revoked.file_id) == (404, no_url(revoked.file_id))
    deleted = await share(api, png())
    await call(api, "DELETE", f"/v1/files/{deleted.file_id}")
    assert await get(api, deleted.file_id) == (404, no_url(deleted.file_id))
    short = await upload(api, png())
    _, made = await create(api, short["id"], {"expires_after": 1})
    await until_past(res, made["expires_at"])
    assert await get(api, short["id"]) == (404, no_url(short["id"]))

    mine = await share(api, png())
    other = await new_team(res)
    async with aiohttp.ClientSession(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {other.key}"}
    ) as theirs:
        assert await get(theirs, mine.file_id) == (404, no_url(mine.file_id))
    assert (await get(api, mine.file_id))[0] == 200

    status, body = await get(api, "file_nope")
    assert status == 400 and body["code"] == "Client specified an invalid argument"
