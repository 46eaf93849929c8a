"""What large objects cost the origin with the slice cache, against real S3 (SeaweedFS) and
Redis: S3 bytes and GETs as the edge's ops listener counts them (`filecdn_edge_origin_*`,
summed over its workers) for cold ranges, seeks, and concurrent readers on two workers, and
the answers byte-exact whichever slices they are assembled from."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import random
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import psutil

from shared import token_cache
from shared.resources import Resources
from tests.conftest import Stack
from tests.helpers import (
    OwnEdge,
    Public,
    edge_workers,
    get,
    mp4,
    own_edge,
    sample,
    scrape,
    share,
    until,
)

MiB = 1024 * 1024


async def origin_reads(edge: OwnEdge) -> tuple[int, int]:
    """(GETs sent to S3, body bytes read from S3) by every worker of the edge so far."""
    samples = await scrape(edge.ops_url)
    return (
        int(sample(samples, "filecdn_edge_origin_requests_total")),
        int(sample(samples, "filecdn_edge_origin_bytes_total")),
    )


async def share_large(api: aiohttp.ClientSession, res: Resources, data: bytes, name: str) -> Public:
    """A public URL of `data`. The suite's stack shares files up to 12 MiB only, so this
    shares a small file, then puts `data` in its object and its size and ETag in the token's
    record, as a file of that size would have them (no worker runs to reconcile it back)."""
    p = await share(api, mp4(1024), name)
    await replace_object(res, p.token, data)
    return Public(p.file_id, p.url, data)


async def replace_object(res: Resources, token: str, data: bytes) -> str:
    """New bytes under the URL's object key, and the record to match; the new ETag."""
    key = token_cache.key(token)
    record = token_cache.UrlRecord.decode(await res.redis.get(key))
    writer = res.storage.writer(record.object_key)
    await writer.write(data)
    await writer.finish()
    etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    replaced = dataclasses.replace(record, etag=etag, size=len(data))
    await res.redis.set(key, replaced.encode(), keepttl=True)
    return etag


def slice_files(edge: OwnEdge) -> list[str]:
    return [p.name for p in edge.cache_dir.iterdir() if not p.name.startswith(".")]


async def test_a_cold_one_byte_range_reads_one_slice_from_s3(
    stack: Stack, api: aiohttp.ClientSession, res: Resources
) -> None:
    big = await share_large(api, res, mp4(18 * MiB), "v.mp4")
    with own_edge(stack, workers=2) as edge:
        status, h, body = await get(edge.public(big), Range="bytes=0-0")
        assert status == 206 and body == big.data[:1]
        assert h["Content-Range"] == f"bytes 0-0/{18 * MiB}"
        requests, read = await origin_reads(edge)
        assert requests == 1 and read <= MiB, (requests, read)
        assert len(slice_files(edge)) == 1  # the disk grew by one slice, not 18 MiB


async def test_a_cold_video_seeked_into_then_downloaded_is_read_from_s3_about_once(
    stack: Stack, api: aiohttp.ClientSession, res: Resources
) -> None:
    video = await share_large(api, res, mp4(40 * MiB), "film.mp4")
    size, data = len(video.data), video.data
    rng = random.Random(40)
    with own_edge(stack, workers=2) as edge:
        url = edge.public(video)
        async with aiohttp.ClientSession() as s:
            for i in range(30):
                first = rng.randrange(size)
                if i % 2:  # a bounded range
                    last = min(size - 1, first + rng.randrange(1, 600 * 1024))
                    async with s.get(url, headers={"Range": f"bytes={first}-{last}"}) as r:
                        assert r.status == 206 and await r.read() == data[first : last + 1]
                else:  # a player's seek: open-ended, read a little, then seek elsewhere
                    async with s.get(url, headers={"Range": f"bytes={first}-"}) as r:
                        assert r.status == 206
                        want = min(64 * 1024, size - first)
                        assert await r.content.readexactly(want) == data[first : first + want]
            async with s.get(url) as r:
                assert r.status == 200 and await r.read() == data
        requests, read = await origin_reads(edge)
        assert read <= 1.05 * size, (requests, read, read / size)
        assert requests <= 40  # one ranged GET per slice, at most


async def test_concurrent_cold_readers_on_two_workers_read_s3_about_once(
    stack: Stack, api: aiohttp.ClientSession, res: Resources
) -> None:
    video = await share_large(api, res, mp4(16 * MiB), "live.mp4")
    with own_edge(stack, workers=2) as edge:
        await until(lambda: len(edge_workers(edge)) == 2, "two listening workers")
        async with _connections_on_each_worker(edge, per_worker=4) as conns:
            path = urlsplit(edge.public(video)).path
            bodies = await asyncio.gather(*(_raw_get(r, w, path) for r, w in conns))
        assert all(body == video.data for body in bodies)
        requests, read = await origin_reads(edge)
        assert read <= 1.1 * len(video.data), (requests, read, read / len(video.data))


async def test_ranges_across_slice_boundaries_and_if_range_are_byte_exact(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    big = await share(api, mp4(3 * MiB + 17), "clip.mp4")
    data, size = big.data, len(big.data)
    slice_bytes = 64 * 1024
    with own_edge(stack, EDGE_SLICE_BYTES=str(slice_bytes)) as edge:
        url = edge.public(big)
        for first, last in [
            (slice_bytes - 1, slice_bytes),  # two bytes, two slices
            (10, 5 * slice_bytes + 3),  # several whole slices and two partial ones
            (size - 20, size - 1),  # into the short last slice
            (3 * slice_bytes, 4 * slice_bytes - 1),  # exactly one slice
        ]:
            status, h, body = await get(url, Range=f"bytes={first}-{last}")
            assert status == 206 and body == data[first : last + 1], (first, last)
            assert h["Content-Range"] == f"bytes {first}-{last}/{size}"
        status, _, body = await get(url, Range="bytes=-100")
        assert status == 206 and body == data[-100:]
        status, h, body = await get(url)
        assert status == 200 and body == data
        etag, modified = h["ETag"], h["Last-Modified"]
        rng = f"bytes={2 * slice_bytes - 5}-{7 * slice_bytes}"
        status, _, body = await get(url, Range=rng, **{"If-Range": etag})
        assert status == 206 and body == data[2 * slice_bytes - 5 : 7 * slice_bytes + 1]
        status, _, body = await get(url, Range=rng, **{"If-Range": modified})
        assert status == 206 and body == data[2 * slice_bytes - 5 : 7 * slice_bytes + 1]
        status, _, body = await get(url, Range=rng, **{"If-Range": '"another"'})
        assert status == 200 and body == data  # a changed validator: the whole object
        status, _, body = await get(url, Range="bytes=0-", **{"If-Range": etag})
        assert status == 206 and body == data


async def test_an_object_replaced_under_its_key_never_serves_old_slices(
    stack: Stack, api: aiohttp.ClientSession, res: Resources
) -> None:
    p = await share(api, mp4(3 * MiB), "r.mp4")
    with own_edge(stack, workers=2) as edge:
        url = edge.public(p)
        assert (await get(url))[2] == p.data  # every old slice cached, on disk and in memory
        old_slices = set(slice_files(edge))
        new = mp4(3 * MiB + 1000)
        etag = await replace_object(res, p.token, new)
        for _ in range(2):  # either worker, memory or disk: the new bytes only
            status, h, body = await get(url)
            assert status == 200 and body == new and h["ETag"] == etag
            status, _, body = await get(url, Range=f"bytes={MiB - 3}-{2 * MiB + 3}")
            assert status == 206 and body == new[MiB - 3 : 2 * MiB + 4]
        assert old_slices < set(slice_files(edge))  # new names: the old never match


async def test_the_slice_directory_stays_within_its_bound_counting_fills(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    big = await share(api, mp4(10 * MiB), "b.mp4")
    with own_edge(stack, workers=2, EDGE_DISK_CACHE_BYTES=str(4 * MiB)) as edge:
        assert (await get(edge.public(big)))[2] == big.data  # ten slices through 4 MiB

        def on_disk() -> int:  # temporary files (fills under way) included
            return sum(p.stat().st_size for p in edge.cache_dir.iterdir() if p.is_file())

        await until(lambda: 0 < on_disk() <= 4 * MiB, "the slice directory trimmed")
        assert (await get(edge.public(big)))[2] == big.data  # evicted slices are read again


# --- helpers ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _connections_on_each_worker(
    edge: OwnEdge, per_worker: int
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    """Keep-alive connections to the edge, `per_worker` accepted by each of its workers (the
    kernel spreads connections over SO_REUSEPORT listeners by hash: open until both have
    enough)."""
    port = int(urlsplit(edge.url).port or 0)
    workers = edge_workers(edge)
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    owner: dict[int, int] = {}  # our local port -> the worker that accepted it

    def attribute() -> bool:
        for pid in workers:
            with contextlib.suppress(psutil.Error):
                for c in psutil.Process(pid).net_connections("tcp"):
                    if c.laddr and c.laddr.port == port and c.raddr:
                        owner[c.raddr.port] = pid
        return all(w.get_extra_info("sockname")[1] in owner for _, w in opened)

    try:
        for _ in range(64):
            opened.append(await asyncio.open_connection("127.0.0.1", port))
            await until(attribute, "the edge to accept the connection")
            counts = [list(owner.values()).count(pid) for pid in workers]
            if min(counts) >= per_worker:
                break
        chosen: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for pid in workers:
            mine = [c for c in opened if owner[c[1].get_extra_info("sockname")[1]] == pid]
            assert len(mine) >= per_worker, "the kernel sent every connection to one worker"
            chosen += mine[:per_worker]
        yield chosen
    finally:
        for _, w in opened:
            w.close()


async def _raw_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    """A GET on an open connection; the body (Content-Length framed)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    assert status == b"200", head
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)
