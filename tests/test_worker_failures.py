"""The worker names the dependency that failed: real clients refused by a closed port, and
the reconcile loop's log line when PostgreSQL (not Redis) is the one that is down."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
import urllib3
from minio import Minio
from structlog.testing import capture_logs

from shared.resources import Resources
from shared.settings import Settings
from shared.token_cache import TokenCache
from tests.helpers import wait_for
from worker import reconcile
from worker.failures import failed_dependency


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


async def _raised(coro: Any) -> BaseException:
    try:
        await coro
    except Exception as exc:
        return exc
    raise AssertionError("expected a failure")


async def test_a_refused_postgresql_connection_is_postgres(closed_port: int) -> None:
    exc = await _raised(asyncpg.connect(f"postgresql://x@127.0.0.1:{closed_port}/x"))
    assert isinstance(exc, OSError)  # the same type a refused Redis or S3 would give
    assert failed_dependency(exc) == "postgres"


async def test_a_refused_redis_connection_is_redis(closed_port: int) -> None:
    client = aioredis.Redis(port=closed_port)
    try:
        assert failed_dependency(await _raised(client.ping())) == "redis"
    finally:
        await client.aclose()


def test_a_refused_s3_connection_is_s3(closed_port: int) -> None:
    no_retries = urllib3.PoolManager(retries=urllib3.Retry(0))
    s3 = Minio(
        f"127.0.0.1:{closed_port}",
        "a",
        "b",
        secure=False,
        region="us-east-1",
        http_client=no_retries,
    )
    with pytest.raises(Exception) as err:
        s3.bucket_exists("bucket")
    assert failed_dependency(err.value) == "s3"


def test_a_failure_wrapped_by_our_code_keeps_its_cause() -> None:
    try:
        try:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed")
        except asyncpg.PostgresError as inner:
            raise RuntimeError("pass failed") from inner
    except RuntimeError as outer:
        assert failed_dependency(outer) == "postgres"


def test_our_own_bugs_and_bad_sql_name_no_dependency() -> None:
    assert failed_dependency(KeyError("url_id")) is None
    assert failed_dependency(asyncpg.UndefinedColumnError("column x does not exist")) is None
    assert failed_dependency(OSError("disk full")) is None  # raised outside any client


class _RedisUp:
    """Redis answering the loop: its epoch is there, and the pass lock is free."""

    async def exists(self, *keys: str) -> int:
        return 1

    async def set(self, *args: Any, **kwargs: Any) -> bool:
        return True


@pytest.fixture
async def postgres_down(closed_port: int) -> AsyncIterator[Resources]:
    pool = await asyncpg.create_pool(f"postgresql://x@127.0.0.1:{closed_port}/x", min_size=0)
    settings = Settings.from_env({"RECONCILE_INTERVAL": "30"})
    try:
        redis: Any = _RedisUp()  # also the token cache's, with its epoch there too
        yield Resources(settings, redis, None, TokenCache(redis), pool, None)  # type: ignore[arg-type]
    finally:
        await pool.close()


async def test_reconcile_says_it_waits_for_postgres_when_postgres_is_down(
    postgres_down: Resources,
) -> None:
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(reconcile.loop(postgres_down, stop))

        async def waiting() -> bool:
            return any(e["event"] == "reconcile waiting" for e in logs)

        try:
            await wait_for(waiting, timeout=5, what="the reconcile loop's first failure")
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
    [waiting] = [e for e in logs if e["event"] == "reconcile waiting"]
    assert waiting["dependency"] == "postgres"
    assert waiting["log_level"] == "warning"
