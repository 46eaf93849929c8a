"""Token cache at scale: memory per URL, a full reconcile pass, lookups at 1k vs 1M URLs.

On a real Valkey and PostgreSQL (embedded, or the ones DATABASE_URL / REDIS_URL name):
1. memory: N entries written as the previous release's JSON records, then as compact
   records; `INFO memory`'s used_memory growth per entry, and `MEMORY USAGE` of sampled keys;
2. reconcile: N live URLs inserted with generate_series, the token cache emptied, then
   `Reconciler.restore_cache()` timed (the step that rebuilds every entry), a second pass
   over a full cache, and `run_once(full=True)` (every step) after emptying it again;
3. lookups: the edge's `TokenLookups` (coalesced MGET) for random live tokens with 1k and
   with N entries present: median per request alone and per tick of 64 requests; and with
   1k entries on a 3-shard cluster the script starts (its lookups split per slot).
Usage: python bench/token_cache.py [--urls 1000000] [--runs 2000] [--only memory,lookups,reconcile]
       [--no-full]
Run it under the heavy lock; the figures of one run compare with each other, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from cdn_edge.lookups import TokenLookups
from cli.embedded import Supervisor, form_cluster, start_valkey
from cli.stack import stack_environment
from shared import db, teams, token_cache
from shared.resources import Resources, open_resources
from shared.settings import Settings
from shared.token_cache import TokenCache, UrlRecord
from worker.reconcile import Reconciler

_CHUNK = 5000


def sample_record(deadline_ms: int) -> UrlRecord:
    file_id = f"file_{uuid.uuid4()}"
    return UrlRecord(
        file_id=file_id,
        name=f"{file_id}.png",
        object_key=f"objects/{file_id}",
        content_type="image/png",
        size=random.randrange(1, 50 * 1024 * 1024),
        etag=f'"{secrets.token_hex(16)}"',
        last_modified=int(time.time()),
        deadline_ms=deadline_ms,
        version=1,
    )


def json_record(record: UrlRecord) -> bytes:
    """The previous release's encoding, byte for byte."""
    return json.dumps(asdict(record), separators=(",", ":")).encode()


async def used_memory(res: Resources) -> int:
    return int((await res.tokens.redis.info("memory"))["used_memory"])


async def empty(res: Resources) -> None:
    """FLUSHALL, freed before it returns (a lazy flush would still hold memory)."""
    await res.tokens.redis.execute_command("FLUSHALL", "SYNC")


async def fill(cache: TokenCache, n: int, encode: bool = True) -> list[str]:
    """n live entries (compact, or JSON when encode is False); returns their tokens."""
    deadline = token_cache.now_ms() + 30 * 86400_000
    tokens = [secrets.token_urlsafe(16) for _ in range(n)]
    for i in range(0, n, _CHUNK):
        chunk = tokens[i : i + _CHUNK]
        if encode:
            await cache.put_many([(t, sample_record(deadline)) for t in chunk])
        else:
            pipe = cache.redis.pipeline(transaction=False)
            for t in chunk:
                pipe.set(token_cache.key(t), json_record(sample_record(deadline)), pxat=deadline)
            await pipe.execute()
    return tokens


async def bench_memory(res: Resources, n: int) -> None:
    print(f"\n## Memory per live URL, {n:,} entries (valkey {await valkey_version(res)})")
    print(f"{'record':32} {'bytes/value':>11} {'used_memory/URL':>16} {'MEMORY USAGE':>13}")
    r = res.tokens.redis
    for label, encode in (("JSON (before)", False), ("compact (now)", True)):
        await empty(res)
        base = await used_memory(res)
        tokens = await fill(res.tokens, n, encode)
        per_url = (await used_memory(res) - base) / n
        sample = random.sample(tokens, 200)
        usage = statistics.median([await r.memory_usage(token_cache.key(t)) for t in sample])
        value = len(await r.get(token_cache.key(sample[0])))
        print(f"{label:32} {value:11d} {per_url:16.1f} {usage:13.0f}")
    await empty(res)


async def valkey_version(res: Resources) -> str:
    info = await res.tokens.redis.info("server")
    return f"{info.get('valkey_version') or info.get('redis_version')}"


async def insert_urls(res: Resources, n: int) -> None:
    team = await teams.create_team(res.db, f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    started = time.perf_counter()
    async with res.db.acquire() as conn:
        await conn.execute(
            """INSERT INTO files (id, team_id, filename, bytes, content_type, sniffed_type,
                                  sha256, object_key)
               SELECT id, $1::bigint, 'f.png', 10240, 'image/png', 'image/png',
                      sha256(id::bytea), 'objects/' || id
                 FROM (SELECT 'file_' || gen_random_uuid() AS id
                         FROM generate_series(1, $2::int)) g""",
            team.id,
            n,
            timeout=1800,
        )
        # Half the URLs never expire, half in 30 days (their entries carry a TTL).
        await conn.execute(
            """INSERT INTO public_urls (file_id, team_id, token, expires_at)
               SELECT id, $1::bigint,
                      translate(rtrim(encode(uuid_send(gen_random_uuid()), 'base64'), '='),
                                '+/', '-_'),
                      CASE WHEN random() < 0.5 THEN NULL ELSE now() + interval '30 days' END
                 FROM files WHERE team_id = $1""",
            team.id,
            timeout=1800,
        )
        await conn.execute("ANALYZE files; ANALYZE public_urls", timeout=1800)
    print(f"({n:,} files and live URLs inserted in {time.perf_counter() - started:.1f} s)")


async def bench_reconcile(res: Resources, n: int, full: bool) -> None:
    print(f"\n## Reconcile over {n:,} live URLs")
    await insert_urls(res, n)
    rec = Reconciler(res)
    await empty(res)
    started = time.perf_counter()
    restored = await rec.restore_cache()
    restore_s = time.perf_counter() - started
    started = time.perf_counter()
    again = await rec.restore_cache()
    steady_s = time.perf_counter() - started
    print(f"restore after FLUSHALL:  {restore_s:6.1f} s  ({restored:,} entries written)")
    print(f"restore, cache full:     {steady_s:6.1f} s  ({again:,} entries written)")
    if not full:
        return
    await empty(res)
    started = time.perf_counter()
    stats = await rec.run_once(full=True)
    full_s = time.perf_counter() - started
    print(f"run_once(full=True):     {full_s:6.1f} s  {stats}")


class LookupTimer:
    """The edge's lookups against one token cache, timed in rounds: the rounds of several
    timers alternate, so that the machine's other load falls on each alike."""

    def __init__(self, label: str, cache: TokenCache, tokens: list[str]) -> None:
        self.label, self.tokens = label, tokens
        self.lookups = TokenLookups(cache.redis, 2.0)
        self.alone: list[float] = []
        self.ticks: list[float] = []

    async def round(self, runs: int) -> None:
        for _ in range(runs):
            t = random.choice(self.tokens)
            start = time.perf_counter()
            assert await self.lookups.get(t) is not None
            self.alone.append(time.perf_counter() - start)
        for _ in range(max(runs // 4, 5)):
            batch = random.sample(self.tokens, 64)
            start = time.perf_counter()
            got = await asyncio.gather(*(self.lookups.get(t) for t in batch))
            self.ticks.append(time.perf_counter() - start)
            assert all(v is not None for v in got)

    def medians(self) -> tuple[float, float]:
        """Microseconds: one lookup alone, a tick of 64 concurrent ones."""
        return statistics.median(self.alone) * 1e6, statistics.median(self.ticks) * 1e6


async def bench_lookups(res: Resources, n: int, runs: int, cluster_url: str) -> None:
    """1k entries in one database, n in another, 1k on a 3-shard cluster; rounds alternate."""
    print(f"\n## Edge token lookups (TokenLookups, coalesced MGET), median of {runs}")
    url = urlsplit(res.settings.redis_url or "")
    small_redis = aioredis.Redis.from_url(urlunsplit(url._replace(path="/1")))
    cluster = RedisCluster.from_url(cluster_url)
    caches = [TokenCache(small_redis), res.tokens, TokenCache(cluster)]
    try:
        for cache in caches:
            await cache.redis.flushdb()
        timers = [
            LookupTimer(f"{1000:,} (one Redis)", caches[0], await fill(caches[0], 1000)),
            LookupTimer(f"{n:,} (one Redis)", caches[1], await fill(caches[1], n)),
            LookupTimer(f"{1000:,} (3 shards)", caches[2], await fill(caches[2], 1000)),
        ]
        rounds = 20
        for _ in range(rounds):
            for timer in timers:
                await timer.round(max(runs // rounds, 1))
        print(f"{'entries':>22} {'1 request, us':>14} {'tick of 64, us':>15}")
        for timer in timers:
            alone, tick = timer.medians()
            print(f"{timer.label:>22} {alone:14.0f} {tick:15.0f}")
        (small_1, small_64), (large_1, large_64), (shards_1, shards_64) = (
            t.medians() for t in timers
        )
        print(
            f"ratio {n:,} / 1,000: {large_1 / small_1:.2f} (1 request), "
            f"{large_64 / small_64:.2f} (tick of 64)"
        )
        print(
            f"ratio 3 shards / one Redis at 1,000: {shards_1 / small_1:.2f} (1 request), "
            f"{shards_64 / small_64:.2f} (tick of 64)"
        )
        for timer in timers:
            await timer.lookups.close()
        for cache in caches:
            await cache.redis.flushdb()
    finally:
        await small_redis.aclose()
        await cluster.aclose()


async def bench(
    env: dict[str, str], n: int, runs: int, only: set[str], cluster: str, full: bool
) -> None:
    settings = Settings.from_env(env)
    async with open_resources(settings) as res:
        if "memory" in only:
            await bench_memory(res, n)
        if "lookups" in only:
            await bench_lookups(res, n, runs, cluster)
        if "reconcile" in only:
            await bench_reconcile(res, n, full)


def start_cluster(sup: Supervisor, work: Path) -> str:
    urls = [
        start_valkey(sup, work / f"shard{i}", persist=False, name=f"shard{i}", cluster=True)
        for i in range(3)
    ]
    form_cluster([int(url.rsplit(":", 1)[1]) for url in urls])
    return urls[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--urls", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--only", default="memory,lookups,reconcile")
    ap.add_argument("--no-full", action="store_true", help="skip run_once(full=True)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="filecdn-bench-tokens-"))
    sup = Supervisor(work / "logs")
    try:
        env = stack_environment(sup, work / "data", dict(os.environ), test_mode=True)
        cluster = start_cluster(sup, work) if "lookups" in only else ""
        asyncio.run(db.migrate(env["DATABASE_URL"]))
        asyncio.run(bench(env, args.urls, args.runs, only, cluster, not args.no_full))
    finally:
        sup.close()


if __name__ == "__main__":
    main()
