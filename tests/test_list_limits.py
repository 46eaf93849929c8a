"""Bounded cost per list: a filter's size is capped (400 naming the cap), PostgreSQL cancels
a statement past DB_STATEMENT_TIMEOUT (503 with a clear message, not 500), and a request
that cannot get a pool connection within DB_ACQUIRE_TIMEOUT is refused (503 with Retry-After)
instead of stalling every caller, authentication included."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import pytest
from xai_sdk.proto import files_pb2

from shared.filters import MAX_COMPARISONS
from shared.resources import Resources
from tests.conftest import Stack, TeamKey, team_client
from tests.helpers import OwnApi, auth, call, own_api, png, upload, wait_for

TOO_MANY = " OR ".join(f"size_bytes > {i}" for i in range(MAX_COMPARISONS + 1))


async def test_a_filter_past_the_comparison_cap_is_400_naming_the_cap(
    api: aiohttp.ClientSession,
) -> None:
    status, body = await call(api, "GET", "/v1/files", params={"filter": TOO_MANY})
    assert status == 400
    assert body["code"] == "Client specified an invalid argument"
    assert f"more than {MAX_COMPARISONS} comparisons" in body["error"]


async def test_a_filter_past_the_comparison_cap_is_invalid_argument_on_grpc(
    stub: Any, team: TeamKey
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListFiles(files_pb2.ListFilesRequest(filter=TOO_MANY), metadata=auth(team))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"more than {MAX_COMPARISONS} comparisons" in str(err.value.details())


@pytest.fixture(scope="module")
def small_pool_api(stack: Stack) -> Iterator[OwnApi]:
    with own_api(
        stack,
        "small-pool-api",
        DB_POOL_MIN="1",
        DB_POOL_MAX="2",
        DB_ACQUIRE_TIMEOUT="0.5",
        DB_STATEMENT_TIMEOUT="3",
    ) as api:
        yield api


async def _blocked_lists(res: Resources) -> int:
    """The API's list queries waiting for a lock (the test's, on public_urls)."""
    return int(
        await res.db.fetchval(
            """SELECT count(*) FROM pg_stat_activity
                WHERE wait_event_type = 'Lock' AND query LIKE '%FROM files f%'"""
        )
    )


async def test_slow_lists_hold_the_pool_then_503s_not_stalls(
    res: Resources, team: TeamKey, small_pool_api: OwnApi
) -> None:
    async with team_client(small_pool_api.url, team) as api:
        stored = await upload(api, png())
        # Two lists that cannot finish (a lock they wait for) hold both pool connections.
        async with res.db.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE public_urls IN ACCESS EXCLUSIVE MODE")
            slow = [asyncio.ensure_future(call(api, "GET", "/v1/files")) for _ in range(2)]
            await wait_for(lambda: _is(2, _blocked_lists(res)), what="both lists to block")

            # Any request now, authentication first, waits for a connection only so long.
            async with api.get(f"/v1/files/{stored['id']}") as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "1"
                assert await r.json() == {
                    "code": "The service is currently unavailable",
                    "error": "no database connection was free within 0.5 s; retry later",
                }
            # The server cancels the stuck statements: a clear 503, and the pool is free.
            for status, body in await asyncio.gather(*slow):
                assert status == 503
                assert body["error"] == (
                    "listing took longer than 3 s and was cancelled; retry later,"
                    " or narrow the filter"
                )
        assert (await call(api, "GET", f"/v1/files/{stored['id']}"))[0] == 200


async def _is(expected: int, value: Any) -> bool:
    return bool(await value == expected)
