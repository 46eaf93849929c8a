"""Stopping the edge for a rollout: on SIGTERM /readyz turns 503 at once, the edge keeps
serving for EDGE_DRAIN_DELAY with every response closing its connection, then closes its
listener and lets the responses under way finish (within EDGE_DRAIN_TIMEOUT). SIGINT skips
the delay. Each test starts its own edge and measures the drain."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from urllib.parse import urlsplit

import aiohttp

from tests.conftest import Stack
from tests.helpers import OwnEdge, get, mp4, own_edge, png, share, until

BIG = 10 * 1024 * 1024


async def open_raw(
    edge: OwnEdge, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if rcvbuf is not None:  # so that the kernel cannot take a whole large body off the edge
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", urlsplit(edge.url).port or 0))
    return await asyncio.open_connection(sock=sock)


async def request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> dict[str, str]:
    """Send a GET and read the response head: its status line and headers (lower-case)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n".encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status, *lines = head.strip().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    headers[":status"] = status.split()[1]
    return headers


def listening(edge: OwnEdge) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", urlsplit(edge.url).port or 0)) == 0


async def test_sigterm_drains_readiness_first_then_the_listener_then_responses_under_way(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    small = await share(api, png(3000))
    big = await share(api, mp4(BIG), "big.mp4")
    delay = 1.5
    with own_edge(stack, workers=2, EDGE_DRAIN_DELAY=str(delay), EDGE_DISK_CACHE_BYTES="0") as edge:
        assert (await get(edge.ops_url + "/readyz"))[0] == 200
        # An idle keep-alive connection, and a large response under way, stalled by its client.
        idle = await open_raw(edge)
        h = await request(*idle, urlsplit(small.url).path)
        assert h[":status"] == "200" and h.get("connection", "keep-alive") != "close"
        await idle[0].readexactly(len(small.data))
        slow = await open_raw(edge, rcvbuf=16 * 1024)
        h = await request(*slow, urlsplit(big.url).path)
        assert h[":status"] == "200" and int(h["content-length"]) == BIG
        body = bytearray(await slow[0].readexactly(64 * 1024))

        sigterm = time.monotonic()
        edge.proc.send_signal(signal.SIGTERM)
        await until(lambda: _status(edge.ops_url + "/readyz", 503), "/readyz to say 503", 5)
        not_ready_after = time.monotonic() - sigterm

        # During the delay the edge still serves, but asks every client to reconnect.
        h = await request(*idle, urlsplit(small.url).path)
        assert h[":status"] == "200" and h["connection"] == "close"
        assert await idle[0].readexactly(len(small.data)) == small.data
        assert await idle[0].read() == b""  # then closed, after a whole response
        async with aiohttp.ClientSession() as s, s.get(edge.public(small)) as r:
            assert r.status == 200 and r.headers["Connection"] == "close"
            assert await r.read() == small.data

        await until(lambda: not listening(edge), "the listener to close", delay + 5)
        closed_after = time.monotonic() - sigterm
        assert edge.running()  # still finishing the stalled response
        while len(body) < BIG:  # the response under way finishes, byte for byte
            chunk = await slow[0].read(1024 * 1024)
            assert chunk, f"cut after {len(body)} bytes"
            body += chunk
        assert bytes(body) == big.data
        assert await slow[0].read() == b""
        await until(lambda: not edge.running(), "the edge to exit", 15)
        exited_after = time.monotonic() - sigterm
        for _, writer in (idle, slow):
            writer.close()
    print(
        f"\ndrain (2 workers, EDGE_DRAIN_DELAY={delay}): /readyz 503 after "
        f"{not_ready_after * 1000:.0f} ms, listener closed after {closed_after:.2f} s, "
        f"exit {exited_after:.2f} s after SIGTERM"
    )
    assert not_ready_after < 0.5
    assert delay <= closed_after < delay + 2
    log = edge.log_text()
    assert "edge draining" in log and '"signal": "SIGTERM"' in log and "Traceback" not in log


async def _status(url: str, status: int) -> bool:
    try:
        return (await get(url))[0] == status
    except aiohttp.ClientError:
        return False


async def stop_and_time(edge: OwnEdge, sig: signal.Signals) -> float:
    """Seconds from the signal to the edge's exit."""
    started = time.monotonic()
    edge.proc.send_signal(sig)
    await until(lambda: not edge.running(), "the edge to exit", 10)
    return time.monotonic() - started


async def test_an_idle_edge_drains_in_its_delay_and_sigint_skips_the_delay(stack: Stack) -> None:
    # Two workers: the supervisor forwards each signal (one process alone runs the same drain).
    with own_edge(stack, workers=2, EDGE_DRAIN_DELAY="1") as edge:
        drained = await stop_and_time(edge, signal.SIGTERM)
    with own_edge(stack, workers=2, EDGE_DRAIN_DELAY="60") as edge:
        stopped = await stop_and_time(edge, signal.SIGINT)
    print(f"\nidle edge, 2 workers: SIGTERM with EDGE_DRAIN_DELAY=1 exits after {drained:.2f} s,")
    print(f"SIGINT with EDGE_DRAIN_DELAY=60 after {stopped:.2f} s")
    assert 1 <= drained < 3
    assert stopped < 3


async def test_a_response_that_outlasts_the_drain_timeout_is_cut(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    big = await share(api, mp4(BIG), "stuck.mp4")
    with own_edge(
        stack, EDGE_DRAIN_DELAY="0", EDGE_DRAIN_TIMEOUT="1", EDGE_DISK_CACHE_BYTES="0"
    ) as edge:
        stuck = await open_raw(edge, rcvbuf=16 * 1024)
        h = await request(*stuck, urlsplit(big.url).path)
        assert h[":status"] == "200"  # and never read: the edge waits on this client
        took = await stop_and_time(edge, signal.SIGTERM)
        received = 0
        while chunk := await stuck[0].read(1024 * 1024):
            received += len(chunk)
        assert received < BIG  # cut short: a client sees a truncated body, never a wrong one
        stuck[1].close()
    assert 1 <= took < 4


async def test_the_edge_exits_only_once_its_kernel_has_sent_the_responses_under_way(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    # A process that exits leaves its unsent bytes to the kernel (up to a 4 MiB send buffer
    # per socket); in a pod the network goes with the last process, and they never arrive.
    big = await share(api, mp4(BIG), "queued.mp4")
    small = await share(api, png(3000))
    with own_edge(stack, EDGE_DRAIN_DELAY="0", EDGE_DISK_CACHE_BYTES="0") as edge:
        idle = await open_raw(edge)
        assert (await request(*idle, urlsplit(small.url).path))[":status"] == "200"
        await idle[0].readexactly(len(small.data))
        reader, writer = await open_raw(edge, rcvbuf=16 * 1024)
        assert (await request(reader, writer, urlsplit(big.url).path))[":status"] == "200"
        received = len(await reader.readexactly(64 * 1024))
        edge.proc.send_signal(signal.SIGTERM)
        # The idle keep-alive connection is closed at once, not held for the slow one.
        assert await asyncio.wait_for(idle[0].read(), 10) == b""
        assert edge.running()
        idle[1].close()
        unreceived_at_exit = 0
        while chunk := await reader.read(64 * 1024):  # a slow client: about 3 MiB/s
            received += len(chunk)
            if not unreceived_at_exit and not edge.running():
                unreceived_at_exit = BIG - received
            await asyncio.sleep(0.02)
        writer.close()
        await until(lambda: not edge.running(), "the edge to exit", 15)
    assert received == BIG
    # At most what the client's own small receive buffer holds (it was 3 MiB before).
    assert unreceived_at_exit <= 256 * 1024
