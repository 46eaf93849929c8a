"""Stalled-uploads benchmark: what 200 clients that start an upload and stop cost the API.

Starts the real stack pieces (embedded PostgreSQL, Valkey, SeaweedFS; the `filecdn api`
process with its default limits, but a shorter UPLOAD_IDLE_TIMEOUT so the run ends soon).
Each client sends a chunked POST /v1/files's headers, a file part's header and 64 KiB, then
nothing. Clients belong to enough teams that none is refused (the worst case for memory;
one team alone would see all but UPLOADS_PER_TEAM refused with 429). Measures, while they
stall: the API's RSS growth over its idle RSS (sampled every 20 ms from a thread), and the
latency of other requests (a list and a get, alternately, from another team). Then waits
for the body timeout to cut every stalled upload (408) and checks that nothing is left:
no row, no object, no open S3 multipart upload.
Usage: python bench/stalled_uploads.py [--clients 200] [--seconds 10] [--idle-timeout 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import aiohttp
import psutil
from api_stack import api_stack
from rss_sampler import RssSampler

from shared import db, teams
from shared.resources import open_resources
from shared.settings import Settings

KiB = 1024
MiB = 1024 * KiB
BOUNDARY = "benchboundary"


class StalledUpload:
    """A raw HTTP/1.1 upload: headers, a chunked body with one file part and 64 KiB, then
    silence until the server answers (or we close)."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            "POST /v1/files HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.key}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        part = (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="stalled.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + os.urandom(64 * KiB)
        self.writer.write(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        await self.writer.drain()

    async def status(self, wait: float) -> int:
        """The status the server answers with (0: none within `wait` s, or a closed socket)."""
        assert self.reader is not None
        try:
            line = await asyncio.wait_for(self.reader.readline(), wait)
        except (TimeoutError, ConnectionError):
            return 0
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 else 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def other_requests(
    api: str, key: str, file_id: str, stop: asyncio.Event
) -> tuple[list[float], int]:
    """List and get, alternately, until stopped: latencies (ms) and non-200 answers."""
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(base_url=api, headers=headers) as s:
        n = 0
        while not stop.is_set():
            path = "/v1/files" if n % 2 == 0 else f"/v1/files/{file_id}"
            started = time.perf_counter()
            async with s.get(path) as r:
                await r.read()
                errors += r.status != 200
            latencies.append((time.perf_counter() - started) * 1000)
            n += 1
            await asyncio.sleep(0.02)
    return latencies, errors


async def make_keys(dsn: str, prefix: str, n: int) -> list[str]:
    pool = await db.create_pool(Settings(database_url=dsn, db_pool_min=1, db_pool_max=2))
    try:
        keys = []
        for i in range(n):
            name = f"{prefix}-{os.getpid()}-{i}"
            await teams.create_team(pool, name)
            keys.append(await teams.create_key(pool, name))
        return keys
    finally:
        await pool.close()


async def leftovers(settings: Settings) -> tuple[int, int, int]:
    """Rows of the stalled teams' files, objects, and open multipart uploads."""
    async with open_resources(settings) as res:
        rows = await res.db.fetchval(
            "SELECT count(*) FROM files f JOIN teams t ON t.id = f.team_id"
            " WHERE t.name LIKE 'bench-stall-%'"
        )
        objects = [k async for k, _ in res.storage.list_objects("objects/")]
        uploads = await res.storage.run_in_thread(
            res.storage.client._list_multipart_uploads, res.storage.bucket
        )
        return int(rows), len(objects) - 1, len(uploads.uploads)  # -1: the reader's file


async def run(
    api: str, port: int, api_pid: int, settings: Settings, args: argparse.Namespace
) -> None:
    per_team = settings.uploads_per_team
    n_teams = -(-args.clients // per_team)
    stall_keys = await make_keys(settings.database_url or "", "bench-stall", n_teams)
    [reader_key] = await make_keys(settings.database_url or "", "bench-reader", 1)
    headers = {"Authorization": f"Bearer {reader_key}"}
    async with aiohttp.ClientSession(base_url=api, headers=headers) as s:
        form = aiohttp.FormData()
        form.add_field("file", os.urandom(4 * KiB), filename="r.bin")
        async with s.post("/v1/files", data=form) as r:
            file_id = (await r.json())["id"]
        for _ in range(20):  # warm: imports, pools, threads
            async with s.get("/v1/files") as r:
                await r.read()
    await asyncio.sleep(1)
    idle = psutil.Process(api_pid).memory_info().rss

    stop = asyncio.Event()
    stalled = [StalledUpload(port, stall_keys[i // per_team]) for i in range(args.clients)]
    with RssSampler(api_pid, interval=0.02) as rss:
        others = asyncio.ensure_future(other_requests(api, reader_key, file_id, stop))
        t0 = time.perf_counter()
        await asyncio.gather(*(u.start() for u in stalled))
        opened = time.perf_counter() - t0
        # Any refused at once has its answer already; the admitted ones answer nothing.
        early = await asyncio.gather(*(u.status(0.5) for u in stalled))
        await asyncio.sleep(args.seconds)
        stop.set()
        latencies, errors = await others
    growth = (rss.peak - idle) / MiB
    refused = sum(1 for s in early if s == 429)
    print(f"{args.clients} stalled uploads ({n_teams} teams), opened in {opened:.2f} s:")
    print(f"  admitted / refused at once (429)   {args.clients - refused} / {refused}")
    print(f"  API idle RSS                       {idle / MiB:7.1f} MiB")
    print(f"  API peak RSS growth                {growth:7.1f} MiB   (goal <= 64 MiB)")
    print(
        f"  other requests meanwhile           {len(latencies)} (list/get), {errors} not 200;"
        f" median {statistics.median(latencies):.1f} ms, p99 {percentile(latencies, 0.99):.1f}"
        f" ms, max {max(latencies):.1f} ms   (goal < 1000 ms)"
    )
    cut_started = time.perf_counter()
    admitted = [u for u, status in zip(stalled, early, strict=True) if status == 0]
    statuses = await asyncio.gather(
        *(u.status(settings.upload_idle_timeout + 30) for u in admitted)
    )
    cut_after = time.perf_counter() - cut_started + args.seconds
    for u in stalled:
        u.close()
    timed_out = sum(1 for s in statuses if s == 408)
    print(
        f"  cut by the body timeout (408)      {timed_out} of {len(admitted)}"
        f" (UPLOAD_IDLE_TIMEOUT={settings.upload_idle_timeout:g} s; last after ~{cut_after:.0f} s)"
    )
    rows, objects, uploads = await leftovers(settings)
    print(f"  left behind: rows {rows}, objects {objects}, open multipart uploads {uploads}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0, help="how long they stall")
    ap.add_argument("--idle-timeout", type=float, default=20.0, help="UPLOAD_IDLE_TIMEOUT")
    args = ap.parse_args()
    with api_stack("filecdn-bench-stalled-", UPLOAD_IDLE_TIMEOUT=str(args.idle_timeout)) as stack:
        asyncio.run(run(stack.url, stack.port, stack.proc.pid, stack.settings, args))


if __name__ == "__main__":
    main()
