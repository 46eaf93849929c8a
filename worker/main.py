"""The worker process: arq's runner plus our consumer, reconcile and sampling loops."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import asyncpg

from shared import db
from shared.settings import Settings
from worker import ops
from worker.settings import build_worker


def check(settings: Settings) -> tuple[int, str]:
    """A liveness probe for an exec probe or a shell: this machine's worker's heartbeat
    (`GET /healthz` on WORKER_OPS_PORT). (0, why) if every loop came round lately."""
    url = ops.probe_url(settings)
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return 0, r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return 1, exc.read().decode(errors="replace")
    except OSError as exc:
        return 1, f"no worker answers at {url}: {exc}"


async def _check_schema(settings: Settings) -> None:
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set")
    conn = await asyncpg.connect(settings.database_url)
    try:
        await db.check_schema(conn)
    finally:
        await conn.close()


def run_worker(settings: Settings) -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is not built for Windows
        pass
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # Before anything runs: SchemaOutdated ends `filecdn worker` with its one-line message.
    loop.run_until_complete(_check_schema(settings))
    build_worker(settings).run()
