"""A client that leaves is one info line and no traceback: over REST (an upload dropped
mid-body: 499, nginx's "client closed request"; a download dropped mid-body) and over gRPC
(an upload cancelled mid-stream: CANCELLED)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from shared.resources import Resources
from tests.conftest import Stack, TeamKey
from tests.helpers import (
    auth,
    data,
    init,
    logged,
    start_raw_upload,
    upload,
    wait_for,
    wait_for_log,
)

MiB = 1024 * 1024


def _request_lines(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    return logged(stack, "api", request_id=request_id)


def _assert_quiet(lines: list[dict[str, Any]]) -> None:
    """Info lines only, and none carries an exception."""
    assert lines
    for line in lines:
        assert line["level"] == "info", line
        assert "exception" not in line and "exc_info" not in line, line


async def test_an_upload_dropped_mid_body_is_one_info_line(stack: Stack, team: TeamKey) -> None:
    request_id = uuid.uuid4().hex
    writer = await start_raw_upload(stack, team.key, request_id, 20 * MiB)
    writer.write(os.urandom(MiB))
    await writer.drain()
    await wait_for_log(stack, "api", event="upload started", request_id=request_id)
    writer.transport.abort()
    gone = await wait_for_log(stack, "api", event="client disconnected", request_id=request_id)
    assert gone["status"] == 499 and gone["path"] == "/v1/files"
    lines = _request_lines(stack, request_id)
    _assert_quiet(lines)
    assert [line["event"] for line in lines].count("client disconnected") == 1
    assert not [line for line in lines if line["event"] == "request"]  # no second line


async def test_a_download_dropped_mid_body_is_one_info_line(
    stack: Stack, team: TeamKey, api: aiohttp.ClientSession
) -> None:
    f = await upload(api, b"\x89PNG\r\n\x1a\n" + os.urandom(12 * MiB))
    request_id = uuid.uuid4().hex
    host, port = stack.api_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /v1/files/{f['id']}/content HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {team.key}\r\nX-Request-Id: {request_id}\r\n\r\n".encode()
    )
    await writer.drain()
    await reader.readexactly(64 * 1024)  # the body is under way
    writer.transport.abort()

    async def logged_once() -> bool:
        return bool(_request_lines(stack, request_id))

    await wait_for(logged_once, what="the download's log line")
    [line] = _request_lines(stack, request_id)
    _assert_quiet([line])
    assert line["status"] in (200, 499)  # 200: the last bytes were written before it left


async def test_a_grpc_upload_cancelled_mid_stream_is_one_info_line(
    stub: Any, stack: Stack, team: TeamKey, res: Resources
) -> None:
    request_id = uuid.uuid4().hex
    sent = asyncio.Event()

    async def chunks() -> AsyncIterator[Any]:
        yield init("x.bin")
        yield data(os.urandom(3 * MiB))
        sent.set()
        await asyncio.sleep(3600)  # never finishes

    call = stub.UploadFile(chunks(), metadata=(*auth(team), ("x-request-id", request_id)))
    await sent.wait()
    started = await wait_for_log(stack, "api", event="upload started", request_id=request_id)
    call.cancel()
    await wait_for_log(stack, "api", event="upload aborted", file_id=started["file_id"])
    rpc = await wait_for_log(stack, "api", event="rpc", request_id=request_id)
    assert rpc["code"] == "CANCELLED"
    _assert_quiet(_request_lines(stack, request_id))
