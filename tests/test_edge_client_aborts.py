"""Clients that leave: a burst of aborted requests (closed or reset mid-body, before the
answer, mid-headers, or not HTTP at all) is counted as 499 (never 500) and leaves no
traceback and no error line in the edge's log, on both event loops and on every path the
bytes take (memory, S3 stream, disk cache)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.conftest import Stack
from tests.helpers import OwnEdge, Public, mp4, own_edge, png, sample, scrape, share, until


async def connect(edge: OwnEdge) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # the body backs up
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", urlsplit(edge.url).port))
    return await asyncio.open_connection(sock=sock)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST instead of a FIN, as a killed client or a load tester does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def leave_mid_body(edge: OwnEdge, p: Public, *, rst: bool) -> None:
    reader, writer = await connect(edge)
    writer.write(f"GET {urlsplit(p.url).path} HTTP/1.1\r\nHost: e\r\n\r\n".encode())
    await reader.readexactly(32 * 1024)  # the head and some of the body, then go
    reset(writer) if rst else writer.close()


async def leave_before_the_answer(edge: OwnEdge, p: Public) -> None:
    _, writer = await connect(edge)
    writer.write(f"GET {urlsplit(p.url).path} HTTP/1.1\r\nHost: e\r\n\r\n".encode())
    await writer.drain()
    reset(writer)


async def leave_mid_headers(edge: OwnEdge, p: Public) -> None:
    _, writer = await connect(edge)
    writer.write(f"GET {urlsplit(p.url).path} HTTP/1.1\r\nHost: e\r\nRan".encode())
    await writer.drain()
    writer.close()


async def send_garbage(edge: OwnEdge, data: bytes) -> None:
    reader, writer = await connect(edge)
    writer.write(data)
    await writer.drain()
    await reader.read()  # the edge answers 400 (or just closes)
    writer.close()


GARBAGE = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
    b"GET / HTTP/1.1\r\nHost: e\r\nBad Header\r\n\r\n",  # a malformed header line
    b"GET / HTTP/1.1\r\nHost: e\r\nContent-Length: x\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",  # a request line too long
]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])  # read+write, and sendfile(2)
async def test_clients_that_leave_are_499s_with_no_traceback_in_the_log(
    stack: Stack, api: aiohttp.ClientSession, loop: str
) -> None:
    small = await share(api, png(200_000))  # served from memory
    cold = [await share(api, mp4(3 * 1024 * 1024), "c.mp4") for _ in range(4)]  # from S3
    warm = await share(api, mp4(3 * 1024 * 1024), "w.mp4")  # from the disk cache
    with own_edge(stack, workers=2, EDGE_EVENT_LOOP=loop) as edge:
        async with aiohttp.ClientSession() as s, s.get(edge.public(warm)) as r:
            assert r.status == 200 and await r.read() == warm.data
        await until(lambda: _has_disk_entry(edge), "the disk cache to hold the warm object", 15)
        burst = []
        for p in (*cold, warm, warm, warm):
            burst += [leave_mid_body(edge, p, rst=False), leave_mid_body(edge, p, rst=True)]
        for p in (small, warm, cold[0]):
            burst += [leave_before_the_answer(edge, p) for _ in range(5)]
            burst += [leave_mid_headers(edge, p) for _ in range(3)]
        burst += [send_garbage(edge, g) for g in GARBAGE]
        await asyncio.gather(*burst)

        await until(lambda: _left(edge) >= 16, "the aborted responses to be logged as 499")
        samples = await scrape(edge.ops_url)
        assert sample(samples, "filecdn_edge_requests_total", status="499") >= 16
        assert sample(samples, "filecdn_edge_requests_total", status="500") == 0
        async with aiohttp.ClientSession() as s, s.get(edge.public(small)) as r:
            assert r.status == 200  # and the edge serves on

    log = edge.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert [line for line in log.splitlines() if _is_error(line)] == []
    statuses = {e["status"] for e in edge.access()}
    assert 500 not in statuses and 499 in statuses


def _has_disk_entry(edge: OwnEdge) -> bool:
    return any(not f.name.startswith(".tmp-") for f in edge.cache_dir.glob("*"))


def _left(edge: OwnEdge) -> int:
    return sum(1 for e in edge.access() if e["status"] == 499)


def _is_error(line: str) -> bool:
    """An error or a traceback, in a JSON line of ours or a plain line of the stdlib's."""
    try:
        entry = json.loads(line)
    except ValueError:  # the standard library's format: LEVEL:logger:message
        return not line.startswith(("INFO:", "DEBUG:"))
    if not isinstance(entry, dict):
        return False
    return entry.get("level") in ("error", "critical") or "exception" in entry
