"""Upload benchmark: a 50 MiB file through the REST API, against a direct S3 PUT.

Starts the real stack pieces (embedded PostgreSQL, Valkey, SeaweedFS; the `filecdn api`
process), uploads RUNS times, and reports per run: throughput, and the API process's peak
RSS growth over its idle RSS (sampled every 2 ms from another thread). The peer is the same
bytes PUT straight into the same S3 with the minio client (multipart), in the same run.
Prints medians and the ratio. Usage: python bench/upload.py [--runs 5] [--mib 50]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import psutil

from cli.embedded import Supervisor, free_port, tcp_open, wait_until
from cli.stack import filecdn_argv, stack_environment
from shared import db, teams
from shared.settings import Settings
from shared.storage import PART_SIZE, Storage

MiB = 1024 * 1024


class RssSampler:
    """Peak RSS of a process while a block runs, sampled from a thread."""

    def __init__(self, pid: int, interval: float = 0.002) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def upload(api: str, key: str, path: Path) -> float:
    async def body() -> object:
        with path.open("rb") as f:
            while chunk := f.read(256 * 1024):
                yield chunk

    form = aiohttp.FormData()
    form.add_field("file", body(), filename=path.name, content_type="application/octet-stream")
    start = time.perf_counter()
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{api}/v1/files", data=form, headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        result = await r.json()
        if r.status != 200:
            raise RuntimeError(f"upload failed: {r.status} {result}")
    return time.perf_counter() - start


def direct_put(settings: Settings, path: Path, n: int) -> float:
    storage = Storage(settings)
    start = time.perf_counter()
    with path.open("rb") as f:
        storage.client.put_object(
            settings.s3_bucket, f"bench/direct-{n}", f, length=-1, part_size=PART_SIZE
        )
    return time.perf_counter() - start


async def make_key(dsn: str) -> str:
    pool = await db.create_pool(Settings(database_url=dsn, db_pool_min=1, db_pool_max=2))
    try:
        name = f"bench-{os.getpid()}"
        await teams.create_team(pool, name)
        return await teams.create_key(pool, name)
    finally:
        await pool.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mib", type=int, default=50)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="filecdn-bench-upload-"))
    sup = Supervisor(work / "logs")
    try:
        env = stack_environment(sup, work / "data", dict(os.environ), test_mode=True)
        port = free_port()
        env.update(API_PORT=str(port), GRPC_PORT=str(free_port()), OPS_PORT=str(free_port()))
        env.update(LOG_LEVEL="warning")
        asyncio.run(db.migrate(env["DATABASE_URL"]))
        key = asyncio.run(make_key(env["DATABASE_URL"]))
        api_proc = sup.start("api", filecdn_argv("api"), env=env)
        wait_until(lambda: tcp_open("127.0.0.1", port), 60, "API")
        api = f"http://127.0.0.1:{port}"
        settings = Settings.from_env(env)
        path = work / "blob.bin"
        with path.open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(MiB))
        size = path.stat().st_size
        asyncio.run(upload(api, key, _small(work)))  # warm the process: imports, pools, threads

        rows = []
        for n in range(args.runs):
            idle = psutil.Process(api_proc.pid).memory_info().rss
            with RssSampler(api_proc.pid) as rss:
                secs = asyncio.run(upload(api, key, path))
            direct = direct_put(settings, path, n)
            rows.append((secs, (rss.peak - idle) / MiB, direct))
            print(
                f"run {n + 1}: api {size / MiB / secs:7.1f} MiB/s  peak RSS growth "
                f"{(rss.peak - idle) / MiB:5.1f} MiB   direct S3 {size / MiB / direct:7.1f} MiB/s"
            )
        api_mibs = statistics.median(size / MiB / r[0] for r in rows)
        direct_mibs = statistics.median(size / MiB / r[2] for r in rows)
        growth = statistics.median(r[1] for r in rows)
        print(f"\n{args.mib} MiB upload, median of {args.runs}:")
        print(f"  API (multipart/form-data -> S3 multipart)  {api_mibs:7.1f} MiB/s")
        print(f"  direct S3 PUT (minio, same bytes)          {direct_mibs:7.1f} MiB/s")
        print(f"  ratio API / direct                         {api_mibs / direct_mibs:7.2f}")
        print(
            f"  API peak RSS growth: median {growth:.1f} MiB, max {max(r[1] for r in rows):.1f}"
            f" MiB (target < 16 MiB)"
        )
    finally:
        sup.close()


def _small(work: Path) -> Path:
    p = work / "warm.bin"
    p.write_bytes(io.BytesIO(os.urandom(6 * MiB)).getvalue())
    return p


if __name__ == "__main__":
    main()
