"""One place maps a failed dependency to UNAVAILABLE (REST 503 with Retry-After): PostgreSQL,
Redis and S3 errors, refused or timed out, from the real clients; our own surprises stay
INTERNAL. Real clients against a closed port or a listener that never answers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
import urllib3
from minio import Minio

from api.errors import PHRASES, UNAVAILABLE_MESSAGE, grpc_status, rest_response


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """Accepts connections and never answers: a hung server."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    for w in held:
        w.transport.abort()
    server.close()


async def _raised(coro: object) -> Exception:
    try:
        await coro  # type: ignore[misc]
    except Exception as exc:
        return exc
    raise AssertionError("expected a failure")


def _assert_unavailable(exc: Exception) -> None:
    response = rest_response(exc)
    assert isinstance(response.body, bytes)
    assert response.status == 503, exc
    assert response.headers["Retry-After"] == "1"
    assert json.loads(response.body) == {
        "code": PHRASES["UNAVAILABLE"],
        "error": UNAVAILABLE_MESSAGE,
    }
    assert grpc_status(exc) == (grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE)


async def test_postgresql_refused_is_unavailable(closed_port: int) -> None:
    _assert_unavailable(await _raised(asyncpg.connect(f"postgresql://x@127.0.0.1:{closed_port}/x")))


async def test_postgresql_hung_is_unavailable(silent_port: int) -> None:
    exc = await _raised(asyncpg.connect(f"postgresql://x@127.0.0.1:{silent_port}/x", timeout=0.3))
    _assert_unavailable(exc)


async def test_redis_refused_and_hung_are_unavailable(closed_port: int, silent_port: int) -> None:
    for port in (closed_port, silent_port):
        client = aioredis.Redis(port=port, socket_timeout=0.3, socket_connect_timeout=0.3)
        try:
            _assert_unavailable(await _raised(client.ping()))
        finally:
            await client.aclose()


async def test_s3_reads_refused_and_hung_are_unavailable(
    closed_port: int, silent_port: int
) -> None:
    timeout = aiohttp.ClientTimeout(total=None, connect=0.3, sock_read=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        for port in (closed_port, silent_port):
            _assert_unavailable(await _raised(s.get(f"http://127.0.0.1:{port}/bucket/key")))


def _minio(port: int) -> Minio:
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=0.3, read=0.3), retries=0)
    return Minio(f"127.0.0.1:{port}", "a", "b", secure=False, region="us-east-1", http_client=http)


async def test_s3_calls_refused_and_hung_are_unavailable(
    closed_port: int, silent_port: int
) -> None:
    for port in (closed_port, silent_port):
        s3 = _minio(port)
        exc = await _raised(asyncio.to_thread(s3.stat_object, "bucket", "key"))
        _assert_unavailable(exc)


def test_our_own_failures_stay_internal() -> None:
    for exc in (KeyError("url_id"), TimeoutError("ours"), OSError("disk full")):  # no client
        assert rest_response(exc).status == 500
        assert grpc_status(exc)[0] == grpc.StatusCode.INTERNAL
