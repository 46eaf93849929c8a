"""gRPC's own limits: messages fit the SDK's 3 MiB chunks with room to spare and no more,
and an upload's API key is checked before any of its body is read."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from shared.resources import Resources
from tests.conftest import Stack, TeamKey
from tests.helpers import auth, data, init, snapshot, stream, uploaded

MiB = 1024 * 1024


async def test_the_sdks_3_mib_chunks_fit(stub: Any, team: TeamKey) -> None:
    payload = os.urandom(3 * MiB)
    stored = await stub.UploadFile(stream([init("big.bin"), data(payload)]), metadata=auth(team))
    assert stored.size == 3 * MiB


async def test_a_message_over_the_limit_is_resource_exhausted_and_leaves_nothing(
    stub: Any, team: TeamKey, res: Resources, stack: Stack
) -> None:
    before = await snapshot(res, team.team)
    too_big = data(os.urandom(stack.settings.grpc_max_message_bytes + 1))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UploadFile(stream([init("big.bin"), too_big]), metadata=auth(team))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in str(err.value.details())
    assert await snapshot(res, team.team) == before


async def test_an_upload_with_a_bad_key_is_refused_before_its_body_is_read(
    stub: Any, team: TeamKey, res: Resources
) -> None:
    before = await snapshot(res, team.team)
    never = asyncio.Event()

    async def body() -> AsyncIterator[Any]:
        yield init("a.png")
        await never.wait()  # the body never comes: the refusal cannot wait for it
        yield data(b"never sent")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UploadFile(body(), metadata=(("authorization", "Bearer fcdn_wrong"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await snapshot(res, team.team) == before
    await uploaded(stub, team)  # the right key still uploads
