"""Upload benchmark: a 50 MiB file through the REST API, against a direct S3 PUT.

Starts the real stack pieces (embedded PostgreSQL, Valkey, SeaweedFS; the `filecdn api`
process) and, RUNS times, in turn:
- **api**: the file through `POST /v1/files` (multipart/form-data, streamed), measuring the
  throughput and the API process's peak RSS growth over its idle RSS (sampled every 2 ms
  from another thread);
- **direct**: the same bytes PUT straight into the same S3 with the minio client (multipart);
- **writer**: the same bytes, from memory, through the API's own S3 path (`ObjectWriter`) in
  this process: the S3 side of an upload without the HTTP hop in front of it.
It also reads the CPU time the API process and the S3 server (SeaweedFS) spent per upload
from /proc. Prints medians, the median of the per-run ratios, and where the CPU went.
Usage: python bench/upload.py [--runs 5] [--mib 50]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
from api_stack import api_stack
from rss_sampler import RssSampler

from shared import db, teams
from shared.settings import Settings
from shared.storage import PART_SIZE, ObjectWriter, Storage

MiB = 1024 * 1024
CHUNK = 256 * 1024  # what the API reads from a multipart body at a time (api/rest.py)


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


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def writer_put(settings: Settings, data: bytes, n: int) -> float:
    """The API's S3 path alone: `ObjectWriter` fed the bytes in the API's read chunks."""
    storage = Storage(settings)
    try:
        start = time.perf_counter()
        writer = ObjectWriter(storage, f"bench/writer-{n}")
        view = memoryview(data)
        for at in range(0, len(data), CHUNK):
            await writer.write(bytes(view[at : at + CHUNK]))
        await writer.finish()
        return time.perf_counter() - start
    finally:
        await storage.close()


def direct_put(settings: Settings, path: Path, n: int) -> float:
    storage = Storage(settings)
    start = time.perf_counter()
    with path.open("rb") as f:
        storage.client.put_object(
            settings.s3_bucket, f"bench/direct-{n}", f, length=-1, part_size=PART_SIZE
        )
    return time.perf_counter() - start


@dataclass(frozen=True)
class Run:
    api: float  # seconds
    growth: float  # MiB
    direct: float
    writer: float
    api_cpu: float  # CPU seconds of the API process during its upload
    weed_cpu: float  # CPU seconds of the S3 server during the API upload
    direct_weed_cpu: float  # ... and during the direct PUT


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
    with api_stack("filecdn-bench-upload-") as stack:
        key = asyncio.run(make_key(stack.settings.database_url))
        api, api_proc, settings, work = stack.url, stack.proc, stack.settings, stack.work
        path = work / "blob.bin"
        with path.open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(MiB))
        size = path.stat().st_size
        asyncio.run(upload(api, key, _small(work)))  # warm the process: imports, pools, threads

        weed = next(p for name, p, _ in stack.sup.children if name == "seaweedfs").pid
        data = path.read_bytes()
        rows = []
        for n in range(args.runs):
            idle = psutil.Process(api_proc.pid).memory_info().rss
            api_cpu, weed_cpu = cpu_seconds(api_proc.pid), cpu_seconds(weed)
            with RssSampler(api_proc.pid, interval=0.002) as rss:
                secs = asyncio.run(upload(api, key, path))
            api_cpu, weed_cpu = cpu_seconds(api_proc.pid) - api_cpu, cpu_seconds(weed) - weed_cpu
            direct_weed = cpu_seconds(weed)
            direct = direct_put(settings, path, n)
            direct_weed = cpu_seconds(weed) - direct_weed
            writer = asyncio.run(writer_put(settings, data, n))
            row = Run(secs, (rss.peak - idle) / MiB, direct, writer, api_cpu, weed_cpu, direct_weed)
            rows.append(row)
            print(
                f"run {n + 1}: api {size / MiB / secs:6.1f} MiB/s (peak RSS growth "
                f"{row.growth:4.1f} MiB)  direct S3 {size / MiB / direct:6.1f}  writer "
                f"{size / MiB / writer:6.1f}  ratio {direct / secs:4.2f}"
            )

        def mibs(pick: Callable[[Run], float]) -> float:
            return statistics.median(size / MiB / pick(r) for r in rows)

        def med(pick: Callable[[Run], float]) -> float:
            return statistics.median(pick(r) for r in rows)

        print(f"\n{args.mib} MiB upload, median of {args.runs}:")
        print(f"  API (multipart/form-data -> S3 multipart)  {mibs(lambda r: r.api):7.1f} MiB/s")
        print(f"  direct S3 PUT (minio, same bytes)          {mibs(lambda r: r.direct):7.1f} MiB/s")
        print(f"  writer: the API's S3 path alone, in memory {mibs(lambda r: r.writer):7.1f} MiB/s")
        api_ratio = med(lambda r: r.direct / r.api)
        writer_ratio = med(lambda r: r.direct / r.writer)
        print(f"  ratio API / direct, median of the runs'    {api_ratio:7.2f}")
        print(f"  ratio writer / direct, the same            {writer_ratio:7.2f}")
        print(
            f"  CPU per upload: API process {med(lambda r: r.api_cpu):.3f} s, S3 server "
            f"{med(lambda r: r.weed_cpu):.3f} s (direct PUT: S3 server "
            f"{med(lambda r: r.direct_weed_cpu):.3f} s), on {os.cpu_count()} cores"
        )
        print(
            f"  API peak RSS growth: median {med(lambda r: r.growth):.1f} MiB, max "
            f"{max(r.growth for r in rows):.1f} MiB (target < 16 MiB)"
        )


def _small(work: Path) -> Path:
    p = work / "warm.bin"
    p.write_bytes(io.BytesIO(os.urandom(6 * MiB)).getvalue())
    return p


if __name__ == "__main__":
    main()
