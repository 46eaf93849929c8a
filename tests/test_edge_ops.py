"""The edge as an operator runs it: caches and their eviction, failures of Redis and S3 (and
recovery), the S3 connection released when a client leaves, per-minute metrics written in
batches, the access log, and `--workers N` supervision. Each test starts its own edge
process(es) against real Redis and S3 (sometimes through a TCP proxy it can break)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import psutil
import pytest

from cdn_edge.slice_files import version_prefix
from cli.embedded import free_port
from shared import metrics, token_cache
from shared.resources import Resources
from tests.conftest import Stack
from tests.helpers import (
    OwnRedis,
    Public,
    edge_workers,
    get,
    mp4,
    own_edge,
    png,
    share,
    until,
)


class FaultyProxy:
    """A TCP proxy in front of S3 that a test can switch to refusing or to hanging."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.mode = "pass"
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def refuse(self) -> None:
        """Connections refused, and the ones open are cut (S3 down)."""
        self.mode = "down"
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self.tasks):
            task.cancel()

    async def restore(self) -> None:
        self.mode = "pass"
        if self.server is None:
            await self.start()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            if self.mode == "hang":  # accept, read, never answer (S3 too slow)
                while await reader.read(65536):
                    pass
                return
            up_r, up_w = await asyncio.open_connection(*self.target)
            try:
                await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
            finally:
                up_w.close()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    while data := await src.read(65536):
        dst.write(data)
        await dst.drain()
    with contextlib.suppress(OSError):
        dst.write_eof()


@pytest.fixture
async def proxy(stack: Stack) -> AsyncIterator[FaultyProxy]:
    s3 = urlsplit(stack.settings.s3_endpoint or "")
    p = FaultyProxy((s3.hostname or "127.0.0.1", s3.port or 80))
    await p.start()
    yield p
    await p.refuse()


# --- caches -----------------------------------------------------------------------------


async def test_small_objects_are_served_from_memory_after_the_first_request(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    p = await share(api, png(3000))
    with own_edge(stack) as edge:
        for _ in range(3):
            assert (await get(edge.public(p)))[2] == p.data
        caches = [e["cache"] for e in await edge.logged(3) if e["status"] == 200]
        assert caches == ["miss", "memory", "memory"], caches
        assert 'filecdn_edge_cache_requests_total{source="memory"} 2' in await edge.prometheus()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_large_objects_are_cached_in_slices_and_deletion_evicts_them(
    stack: Stack, api: aiohttp.ClientSession, res: Resources, loop: str
) -> None:
    p = await share(api, mp4(2 * 1024 * 1024 + 5), "big.mp4")
    with own_edge(stack, EDGE_EVENT_LOOP=loop) as edge:
        assert (await get(edge.public(p)))[2] == p.data  # three slices from S3, kept on disk
        prefix = await slice_prefix(res, p)
        cached = [edge.cache_dir / f"{prefix}{i}" for i in range(3)]
        assert b"".join(c.read_bytes() for c in cached) == p.data
        status, _, body = await get(edge.public(p), Range="bytes=1048570-1114111")
        assert status == 206 and body == p.data[1048570:1114112]
        entries = await edge.logged(2)
        assert [e["cache"] for e in entries if e["status"] in (200, 206)] == ["miss", "memory"]

        async with api.delete(f"/v1/files/{p.file_id}") as r:
            assert r.status == 200
        assert (await get(edge.public(p)))[0] == 404  # the token is gone: no cached byte leaks
        await until(lambda: not any(c.exists() for c in cached), "eviction of the slices")


async def test_the_disk_cache_stays_within_its_bound(
    stack: Stack, api: aiohttp.ClientSession, res: Resources
) -> None:
    # 4 MiB of cache: four slices of 1 MiB; five objects of 900 KiB cannot all stay.
    shared = [await share(api, mp4(900 * 1024), "c.mp4") for _ in range(5)]
    with own_edge(stack, EDGE_DISK_CACHE_BYTES=str(4 * 1024 * 1024)) as edge:
        for p in shared:
            assert (await get(edge.public(p)))[2] == p.data
            copy = edge.cache_dir / f"{await slice_prefix(res, p)}0"
            await until(copy.exists, "the slice on disk")  # the newest slice is never trimmed
        await until(
            lambda: 0 < sum(f.stat().st_size for f in _cached_files(edge.cache_dir)) <= 4 << 20,
            "the disk cache trimmed to its bound",
        )
        for p in shared:  # evicted or not, every URL still serves the right bytes
            assert (await get(edge.public(p)))[2] == p.data


async def slice_prefix(res: Resources, p: Public) -> str:
    """The name of the edge's slice files of the current version of a shared file, less
    the slice's index (1 MiB slices)."""
    raw = await res.redis.get(token_cache.key(p.token))
    record = token_cache.UrlRecord.decode(raw)
    return version_prefix(record.object_key, record.etag, 1024 * 1024)


def _cached_files(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return [f for f in directory.iterdir() if not f.name.startswith(".tmp-")]


# --- failures ---------------------------------------------------------------------------


async def test_redis_hung_or_down_is_503_never_an_unchecked_serve_and_it_recovers(
    stack: Stack, api: aiohttp.ClientSession, res: Resources, own_redis: OwnRedis
) -> None:
    p = await share(api, png(3000))
    await own_redis.copy_token(res, p.token)
    with own_edge(stack, REDIS_URL=own_redis.url, EDGE_REDIS_TIMEOUT="1") as edge:
        assert (await get(edge.public(p)))[2] == p.data  # now also in its memory cache

        own_redis.signal(signal.SIGSTOP)  # hung: connections open, no answers
        try:
            started = time.monotonic()
            status, _, _ = await get(edge.public(p))
            assert status == 503 and time.monotonic() - started < 5  # EDGE_REDIS_TIMEOUT=1
        finally:
            own_redis.signal(signal.SIGCONT)
        await until(lambda: _is_status(edge.public(p), 200), "the edge to recover")

        own_redis.stop()
        status, h, body = await get(edge.public(p))
        assert (status, body) == (503, b"Service Unavailable\n")
        assert h["Cache-Control"] == "no-store" and h["Retry-After"] == "1"
        assert edge.proc.is_running()

        own_redis.start()
        # The new Redis is empty: the URL is unknown there, so 404, not the cached bytes.
        await until(lambda: _is_status(edge.public(p), 404), "the edge to reach the new Redis")
        await own_redis.copy_token(res, p.token)
        assert (await get(edge.public(p)))[2] == p.data


async def _is_status(url: str, status: int) -> bool:
    return (await get(url))[0] == status


async def test_s3_down_is_502_s3_hanging_is_504_and_both_recover(
    stack: Stack, api: aiohttp.ClientSession, proxy: FaultyProxy
) -> None:
    a, b = await share(api, png(3000)), await share(api, png(3000))
    big = await share(api, mp4(1024 * 1024), "b.mp4")
    with own_edge(
        stack,
        S3_ENDPOINT=f"http://127.0.0.1:{proxy.port}",
        EDGE_S3_TIMEOUT="1",
        EDGE_DISK_CACHE_BYTES="0",
    ) as edge:
        await proxy.refuse()
        assert (await get(edge.public(a)))[:3:2] == (502, b"Bad Gateway\n")
        assert (await get(edge.public(big)))[0] == 502

        await proxy.restore()
        proxy.mode = "hang"
        started = time.monotonic()
        assert (await get(edge.public(a)))[:3:2] == (504, b"Gateway Timeout\n")
        assert time.monotonic() - started < 5  # bounded by EDGE_S3_TIMEOUT, not hanging
        assert edge.proc.is_running()

        proxy.mode = "pass"
        assert (await get(edge.public(a)))[2] == a.data
        assert (await get(edge.public(b)))[2] == b.data
        assert (await get(edge.public(big)))[2] == big.data


async def test_cold_ranges_from_the_slice_cache_with_s3_down_are_a_clean_502(
    stack: Stack, api: aiohttp.ClientSession, proxy: FaultyProxy
) -> None:
    big = await share(api, mp4(3 * 64 * 1024), "b.mp4")  # three slices of 64 KiB
    with own_edge(
        stack,
        S3_ENDPOINT=f"http://127.0.0.1:{proxy.port}",
        EDGE_S3_TIMEOUT="1",
        EDGE_SLICE_BYTES=str(64 * 1024),
        EDGE_MEMORY_CACHE_OBJECT_MAX="1024",
    ) as edge:
        await proxy.refuse()
        inside = {"Range": "bytes=70000-70099"}  # one slice: the head and body in one write
        across = {"Range": "bytes=60000-70000"}  # two slices: streamed slice by slice
        for headers in (inside, across, {}):
            status, _, body = await get(edge.public(big), **headers)
            assert (status, body) == (502, b"Bad Gateway\n")

        await proxy.restore()
        assert (await get(edge.public(big), **inside))[::2] == (206, big.data[70000:70100])
        assert (await get(edge.public(big), **across))[::2] == (206, big.data[60000:70001])
        assert (await get(edge.public(big)))[::2] == (200, big.data)


async def test_a_stalled_client_holds_back_s3_and_leaving_releases_the_connection(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    big = await share(api, mp4(10 * 1024 * 1024), "long.mp4")
    s3_port = urlsplit(stack.settings.s3_endpoint or "").port
    with own_edge(stack, EDGE_DISK_CACHE_BYTES="0") as edge:
        assert (await get(edge.public(big)))[2] == big.data  # warm the process up
        rss_before = edge.proc.memory_info().rss

        def s3_connections() -> int:
            return sum(
                1
                for c in edge.proc.net_connections("tcp")
                if c.raddr and c.raddr.port == s3_port and c.status == psutil.CONN_ESTABLISHED
            )

        read_before = edge.proc.io_counters().read_chars  # bytes from every socket and file
        # A client that reads the head, then nothing: a small receive buffer, so that the
        # kernel holds little of the body on our side.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", int(urlsplit(edge.url).port or 0)))
        reader, writer = await asyncio.open_connection(sock=sock)
        path = urlsplit(big.url).path
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        assert b"200 OK" in await reader.read(16 * 1024)  # then stop reading: S3 waits on us
        await until(lambda: s3_connections() == 1, "the S3 stream to be open")

        reads: list[int] = []

        def stopped_reading() -> bool:  # nothing more read for a few polls in a row
            reads.append(edge.proc.io_counters().read_chars)
            return len(reads) > 5 and reads[-1] == reads[-6]

        await until(stopped_reading, "the edge to stop reading from S3")
        # Back-pressure: S3 is read only as fast as the client reads, so the edge stops short
        # of the object (here after ~4.5 of 10 MiB: the kernel's send buffer, up to
        # tcp_wmem's 4 MiB, holds the rest of what it read), and nothing piles up in memory.
        assert reads[-1] - read_before < 0.8 * len(big.data)
        assert edge.proc.memory_info().rss - rss_before < 4 * 1024 * 1024
        writer.transport.abort()
        await until(lambda: s3_connections() == 0, "the S3 connection to close")


# --- metrics and logs -------------------------------------------------------------------


async def test_metrics_are_per_minute_buckets_written_in_batches(
    stack: Stack, api: aiohttp.ClientSession, res: Resources, own_redis: OwnRedis
) -> None:
    own = own_redis.client
    p = await share(api, png(2000))
    await own_redis.copy_token(res, p.token)
    with own_edge(stack, REDIS_URL=own_redis.url) as edge:
        await own.config_resetstat()
        async with aiohttp.ClientSession() as s:
            for _ in range(200):
                async with s.get(edge.public(p)) as r:
                    assert r.status == 200
                async with s.get(edge.public(p) + "x") as r:
                    assert r.status == 404
        total: dict[str, int] = {}

        async def flushed() -> bool:  # every request written (a flush happens once a second)
            total.clear()
            for fields in (await metrics.read(own, minutes=2)).values():
                for k, v in fields.items():
                    total[k] = total.get(k, 0) + v
            return total.get("edge.latency_ms.le_inf", 0) >= 400

        await until(flushed, "400 requests in the per-minute buckets")
        stats = await own.info("commandstats")
        writes = stats.get("cmdstat_hincrby", {}).get("calls", 0)
        assert 0 < writes < 100, stats  # 400 requests, a handful of pipelines
        assert total["edge.requests.200"] == 200 and total["edge.requests.404"] == 200
        assert total["edge.bytes"] >= 200 * 2000
        assert total["edge.cache.memory_hits"] == 199 and total["edge.cache.misses"] == 1
        assert total["edge.latency_ms.le_inf"] == 400


async def test_the_access_log_never_holds_a_whole_token(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    p = await share(api, png(2000))
    with own_edge(stack) as edge:
        await get(edge.public(p), Range="bytes=0-9")
        [entry] = await edge.logged(1)
        assert str(entry["path"]).endswith(p.url.rsplit("/", 1)[1])
        assert entry["status"] == 206 and entry["range"] == "bytes=0-9" and entry["bytes"] == 10
        assert str(entry["path"]).startswith("/" + p.token[:4])
        assert p.token not in edge.log.read_text()


# --- scale out --------------------------------------------------------------------------


async def test_workers_share_one_port_and_a_dead_worker_is_replaced(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    p = await share(api, png(2000))
    with own_edge(stack, workers=2) as edge:
        await until(lambda: len(edge_workers(edge)) == 2, "two listening workers")
        victim = edge_workers(edge)[0]
        os.kill(victim, signal.SIGKILL)
        await until(
            lambda: len(edge_workers(edge)) == 2 and victim not in edge_workers(edge),
            "a replacement worker",
        )
        async with aiohttp.ClientSession() as s:
            for _ in range(20):  # new connections land on either worker
                async with s.get(edge.public(p), headers={"Connection": "close"}) as r:
                    assert r.status == 200 and await r.read() == p.data
        family = [edge.proc, *edge.proc.children(recursive=True)]
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive


async def test_cache_control_is_configurable_for_a_cdn_that_purges(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    p = await share(api, png(2000))
    with own_edge(stack, EDGE_CACHE_CONTROL="public, max-age=60, s-maxage=300") as edge:
        _, h, _ = await get(edge.public(p))
        assert h["Cache-Control"] == "public, max-age=60, s-maxage=300"
        _, h, _ = await get(edge.public(p) + "x")
        assert h["Cache-Control"] == "no-store"  # a 404 is never cached, whatever the setting
