"""List benchmark: one team with 100k files, the API's exact list queries.

Measures (median of RUNS) the first page, a deep page reached by cursor, each sort order,
and a filtered page, through `shared.files.list_files` on a real PostgreSQL. The peer, in
the same run, is the same SQL with index scans disabled (what a missing index would cost).
Usage: python bench/list.py [--files 100000] [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cli.embedded import Supervisor
from cli.stack import stack_environment
from shared import db, pagination, teams
from shared.files import cursor_secret, list_files, list_sql
from shared.pagination import ListQuery
from shared.resources import open_resources
from shared.settings import Settings


async def median_ms(fn: Callable[[], Awaitable[object]], runs: int) -> float:
    await fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def bench(env: dict[str, str], n: int, runs: int) -> None:
    settings = Settings.from_env(env)
    async with open_resources(settings) as res:
        team = await teams.create_team(res.db, f"bench-{os.getpid()}")
        await res.db.execute(
            """INSERT INTO files (id, team_id, filename, bytes, content_type, sniffed_type,
                                  sha256, object_key, created_at)
               SELECT 'file_' || gen_random_uuid(), $1::bigint,
                      'report-' || (g % 997) || '-' || g || '.pdf', (g * 7919) % 50000000,
                      CASE WHEN g % 3 = 0 THEN 'image/png' ELSE 'application/pdf' END,
                      NULL, '\\x00', 'bench/' || $1::text || '/' || g,
                      now() - g * interval '1 second'
                 FROM generate_series(1, $2::int) g""",
            team.id,
            n,
        )
        await res.db.execute("ANALYZE files")
        deep_token = None
        q = ListQuery(limit=100)
        for _ in range(50):  # walk to page 50 once to get a deep cursor
            page = await list_files(res, team, ListQuery(limit=100, pagination_token=deep_token))
            deep_token = page.next_token
        cases: dict[str, ListQuery] = {
            "first page, newest first": q,
            "page 51 by cursor": ListQuery(limit=100, pagination_token=deep_token),
            "sort_by=filename asc": ListQuery(limit=100, sort_by="filename", order="asc"),
            "sort_by=size desc": ListQuery(limit=100, sort_by="size"),
            'filter content_type = "image/png"': ListQuery(
                limit=100, filter='content_type = "image/png"'
            ),
            "filter size_bytes > 49000000": ListQuery(limit=100, filter="size_bytes > 49000000"),
        }
        print(f"{n} files in one team, median of {runs} (ms):")
        print(f"{'query':40} {'indexed':>9} {'no index':>9} {'ratio':>7}")
        for name, query in cases.items():
            indexed = await median_ms(lambda query=query: list_files(res, team, query), runs)
            sql, params = list_sql(team, query, 100, None)
            if query.pagination_token:  # resolve the cursor the way list_files does
                digest = query.digest()
                cursor = pagination.decode(cursor_secret(settings), digest, deep_token or "")
                sql, params = list_sql(team, query, 100, cursor)

            async def seq(sql: str = sql, params: list[object] = params) -> None:
                async with res.db.acquire() as conn, conn.transaction():
                    await conn.execute("SET LOCAL enable_indexscan = off")
                    await conn.execute("SET LOCAL enable_bitmapscan = off")
                    # Its own statement text: asyncpg caches prepared statements per
                    # connection, and a cached plan would ignore the settings above.
                    await conn.fetch("/* no index */ " + sql, *params)

            plain = await median_ms(seq, max(3, runs // 4))
            print(f"{name:40} {indexed:9.2f} {plain:9.2f} {plain / indexed:6.0f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="filecdn-bench-list-"))
    sup = Supervisor(work / "logs")
    try:
        env = stack_environment(sup, work / "data", dict(os.environ), test_mode=True)
        asyncio.run(db.migrate(env["DATABASE_URL"]))
        asyncio.run(bench(env, args.files, args.runs))
    finally:
        sup.close()


if __name__ == "__main__":
    main()
