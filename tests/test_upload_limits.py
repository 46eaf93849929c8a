"""Bounded cost per upload: uploads in progress are limited per team and per process (429
with Retry-After, RESOURCE_EXHAUSTED on gRPC), a client that sends its body too slowly is
cut off (408, DEADLINE_EXCEEDED), a connection that never finishes its headers is closed,
and upload buffers hold what has arrived, under the process's memory budget. Every refusal
leaves nothing behind.

Each group runs against an API process of its own, with tiny limits in its environment;
stalled uploads are raw HTTP/1.1 requests (chunked body, one file part, then silence) so
that the test decides exactly what the server has received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from xai_sdk.proto import files_pb2_grpc

from shared.errors import Unavailable
from shared.resources import Resources
from shared.storage import PART_SIZE
from shared.upload_limits import UploadMemory
from tests.conftest import Stack, TeamKey, new_team, team_client
from tests.helpers import (
    PNG,
    OwnApi,
    auth,
    data,
    init,
    leftovers,
    own_api,
    pending_multipart_uploads,
    png,
    snapshot,
    upload,
    wait_for,
    wait_for_log,
)

KiB = 1024
MiB = 1024 * KiB
BOUNDARY = "limitsboundary"


class RawUpload:
    """A POST /v1/files written by hand: headers, a chunked body, then whatever we send."""

    def __init__(self, stack: Stack, api: OwnApi, team: TeamKey) -> None:
        self.stack = stack
        self.api = api
        self.team = team
        self.request_id = uuid.uuid4().hex
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def start(self, first: bytes = b"") -> None:
        """Headers, the file part's header and `first` bytes of the file; then silence."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.api.port)
        self.writer.write(
            (
                "POST /v1/files HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{self.api.port}\r\n"
                f"Authorization: Bearer {self.team.key}\r\n"
                f"X-Request-Id: {self.request_id}\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        part_header = (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="stalled.png"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        await self.send(part_header + first)

    async def send(self, chunk: bytes) -> None:
        self.writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await self.writer.drain()

    async def admitted(self) -> None:
        """The server has counted this upload (it logs the start once it has)."""
        await wait_for_log(
            self.stack, self.api.name, event="upload started", request_id=self.request_id
        )

    async def response(self) -> tuple[int, dict[str, str], Any]:
        """The status, headers and JSON body the server answered with."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        status_line, *lines = head.decode().split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers["content-length"]))
        return int(status_line.split()[1]), headers, json.loads(body)

    async def closed_by_server(self) -> bool:
        """Whether the server has closed the connection (reads EOF, or a reset)."""
        try:
            return await asyncio.wait_for(self.reader.read(65536), 0.05) == b""
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def stalled(stack: Stack, api: OwnApi, team: TeamKey, n: int) -> AsyncIterator[None]:
    """n uploads the server has admitted, each stalled after 64 KiB; dropped on exit."""
    held = [RawUpload(stack, api, team) for _ in range(n)]
    for h in held:
        await h.start(png(64 * KiB))
        await h.admitted()
    try:
        yield
    finally:
        for h in held:
            await h.close()


async def refused_at_once(stack: Stack, api: OwnApi, team: TeamKey) -> dict[str, Any]:
    """A stalled upload the server refuses as soon as its file part begins: 429."""
    r = RawUpload(stack, api, team)
    await r.start(png(64 * KiB))
    try:
        status, headers, body = await r.response()
    finally:
        await r.close()
    assert status == 429, body
    assert headers["retry-after"] == "1"
    assert headers["content-type"].startswith("application/json")
    assert body["code"] == "Some resource has been exhausted"
    return dict(body)


# --- uploads in progress, per team and per process ------------------------------------------


@pytest.fixture(scope="module")
def limited_api(stack: Stack) -> Iterator[OwnApi]:
    with own_api(
        stack,
        "limits-api",
        UPLOADS_PER_TEAM="2",
        UPLOADS_PER_PROCESS="3",
        GRPC_MAX_CONCURRENT_RPCS="2",
    ) as api:
        yield api


async def test_uploads_past_the_team_limit_are_429_with_retry_after_and_leave_nothing(
    stack: Stack, res: Resources, limited_api: OwnApi
) -> None:
    team, other = await new_team(res), await new_team(res)
    before, everything = await snapshot(res, team.team), await leftovers(res)
    async with stalled(stack, limited_api, team, 2):
        body = await refused_at_once(stack, limited_api, team)
        assert body["error"] == (
            "your team has 2 uploads in progress, the most allowed at once;"
            " retry when one has finished"
        )
        # gRPC uploads count against the same limit (refused at their init message; only
        # that is sent, so that the client is not sending when the refusal comes).
        async with grpc.aio.insecure_channel(limited_api.grpc_target) as channel:
            stub = files_pb2_grpc.FilesStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.UploadFile(_chunks([init()]), metadata=auth(team))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.value.details() == body["error"]
            assert dict(err.value.trailing_metadata() or ())["retry-after"] == "1"
        # Another team is not held back by this one.
        async with team_client(limited_api.url, other) as api:
            others = await upload(api, png())
    # The clients left: their uploads are dropped, and their slots are free again.
    await wait_for(
        lambda: _nothing_left_since(res, everything), what="the dropped uploads to be cleaned up"
    )
    rows, objects, *rest = await snapshot(res, team.team)
    assert (rows, objects - {f"objects/{others['id']}"}, *rest) == before
    async with team_client(limited_api.url, team) as api:
        await upload(api, png())


async def test_uploads_past_the_process_limit_are_429_whatever_the_team(
    stack: Stack, res: Resources, limited_api: OwnApi
) -> None:
    a, b, c = await new_team(res), await new_team(res), await new_team(res)
    before = await snapshot(res, c.team)
    async with stalled(stack, limited_api, a, 2), stalled(stack, limited_api, b, 1):
        body = await refused_at_once(stack, limited_api, c)
        assert body["error"] == "this server has 3 uploads in progress; retry shortly"
    assert await snapshot(res, c.team) == before
    async with team_client(limited_api.url, c) as api:
        await upload(api, png())


async def test_grpc_refuses_rpcs_past_its_concurrency_limit(
    stack: Stack, res: Resources, limited_api: OwnApi
) -> None:
    team = await new_team(res)
    before = await snapshot(res, team.team)
    hold = asyncio.Event()

    async def stalled_stream() -> AsyncIterator[Any]:
        yield init()
        yield data(PNG)
        await hold.wait()

    async with grpc.aio.insecure_channel(limited_api.grpc_target) as channel:
        stub = files_pb2_grpc.FilesStub(channel)
        calls = []
        for _ in range(2):
            rid = uuid.uuid4().hex
            calls.append(
                stub.UploadFile(stalled_stream(), metadata=(*auth(team), ("x-request-id", rid)))
            )
            await wait_for_log(stack, limited_api.name, event="upload started", request_id=rid)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListFiles(files_pb2_list_request(), metadata=auth(team))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for call in calls:
            call.cancel()

        async def served() -> bool:
            try:
                await stub.ListFiles(files_pb2_list_request(), metadata=auth(team))
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False
            return True

        await wait_for(served, what="the cancelled uploads to end")
    await wait_for(
        lambda: _same(res, team, before), what="the cancelled uploads to leave nothing behind"
    )


def files_pb2_list_request() -> Any:
    from xai_sdk.proto import files_pb2

    return files_pb2.ListFilesRequest()


async def _chunks(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def _same(res: Resources, team: TeamKey, before: object) -> bool:
    return await snapshot(res, team.team) == before


async def _nothing_left_since(res: Resources, before: Any) -> bool:
    return not (await leftovers(res)).since(before)


# --- the process's upload memory -----------------------------------------------------------


@pytest.fixture(scope="module")
def frugal_api(stack: Stack) -> Iterator[OwnApi]:
    with own_api(
        stack, "frugal-api", UPLOAD_MEMORY_BUDGET_BYTES=str(16 * MiB), UPLOAD_MEMORY_WAIT="1"
    ) as api:
        yield api


async def test_an_upload_with_no_memory_free_waits_then_is_503_and_leaves_nothing(
    stack: Stack, res: Resources, frugal_api: OwnApi
) -> None:
    """Three stalled uploads hold almost the whole budget in buffered chunks (each below
    one S3 part, so nothing is sent on); a fourth waits for room, unread, then gets 503."""
    team = await new_team(res)
    before, everything = await snapshot(res, team.team), await leftovers(res)
    held = [RawUpload(stack, frugal_api, team) for _ in range(3)]
    for h in held:
        await h.start(png(PART_SIZE - 128 * KiB))
        await h.admitted()
    late = RawUpload(stack, frugal_api, team)
    try:
        await late.start()
        await late.admitted()

        async def send_more() -> None:
            with contextlib.suppress(ConnectionError):  # the answer may come first
                await late.send(os.urandom(4 * MiB))

        sending = asyncio.create_task(send_more())
        status, headers, body = await late.response()
        await sending
    finally:
        await late.close()
        for h in held:
            await h.close()
    assert status == 503, body
    assert headers["retry-after"] == "1"
    assert body == {
        "code": "The service is currently unavailable",
        "error": "the server has no memory free for this upload now; retry later",
    }
    await wait_for(
        lambda: _nothing_left_since(res, everything), what="the dropped uploads to be cleaned up"
    )
    assert await snapshot(res, team.team) == before
    async with team_client(frugal_api.url, team) as api:  # the memory was given back
        await upload(api, png(8 * MiB))


# --- slow senders ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient_api(stack: Stack) -> Iterator[OwnApi]:
    with own_api(
        stack,
        "impatient-api",
        UPLOAD_IDLE_TIMEOUT="1",
        UPLOAD_BODY_TIMEOUT="3",
        API_KEEPALIVE_TIMEOUT="1",
    ) as api:
        yield api


async def test_a_stalled_upload_is_cut_off_with_408_and_its_parts_are_dropped(
    stack: Stack, res: Resources, impatient_api: OwnApi
) -> None:
    team = await new_team(res)
    before = await snapshot(res, team.team)
    r = RawUpload(stack, impatient_api, team)
    # Past one part: the server has a multipart upload open in S3 when the client stalls.
    await r.start(png(PART_SIZE + 256 * KiB))
    try:
        started = await wait_for_log(
            stack, impatient_api.name, event="upload started", request_id=r.request_id
        )
        status, _, body = await r.response()
    finally:
        await r.close()
    assert status == 408
    assert body == {
        "code": "Deadline expired before operation could complete",
        "error": "the request body stalled: nothing arrived for 1 s",
    }
    await wait_for_log(
        stack, impatient_api.name, event="upload aborted", file_id=started["file_id"]
    )
    assert await snapshot(res, team.team) == before


async def test_a_trickling_upload_is_cut_off_at_the_body_deadline(
    stack: Stack, res: Resources, impatient_api: OwnApi
) -> None:
    team = await new_team(res)
    before = await snapshot(res, team.team)
    r = RawUpload(stack, impatient_api, team)
    await r.start(PNG)
    answer = asyncio.ensure_future(r.response())
    try:
        while not answer.done():  # a few bytes well within every idle timeout, for ever
            with contextlib.suppress(ConnectionError):
                await r.send(b"x" * 64)
            await asyncio.wait([answer], timeout=0.2)
        status, _, body = answer.result()
    finally:
        answer.cancel()
        await r.close()
    assert (status, body["error"]) == (408, "the request body did not arrive within 3 s")
    assert await snapshot(res, team.team) == before


async def test_a_stalled_grpc_upload_is_deadline_exceeded_and_leaves_nothing(
    stack: Stack, res: Resources, impatient_api: OwnApi
) -> None:
    team = await new_team(res)
    before = await snapshot(res, team.team)
    forever = asyncio.Event()

    async def chunks() -> AsyncIterator[Any]:
        yield init()
        yield data(os.urandom(6 * MiB // 2))
        yield data(os.urandom(6 * MiB // 2))  # a multipart upload is open in S3 by now
        await forever.wait()

    async with grpc.aio.insecure_channel(impatient_api.grpc_target) as channel:
        stub = files_pb2_grpc.FilesStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.UploadFile(chunks(), metadata=auth(team))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.value.details() == "the request body stalled: nothing arrived for 1 s"
    assert await snapshot(res, team.team) == before


async def test_a_connection_that_never_finishes_its_headers_is_closed(
    stack: Stack, impatient_api: OwnApi
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", impatient_api.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 30) == b""
    finally:
        writer.close()


# --- memory: what has arrived, under the process's budget -----------------------------------


async def test_an_upload_holds_only_what_has_arrived_and_returns_it(res: Resources) -> None:
    memory = UploadMemory(64 * MiB, wait=5)
    before = await pending_multipart_uploads(res)
    writer = res.storage.writer(f"objects/test-{uuid.uuid4().hex}", memory)
    await writer.write(os.urandom(64 * KiB))
    assert memory.in_use == 64 * KiB  # not a 5 MiB part buffer
    for _ in range(12):
        await writer.write(os.urandom(MiB))
    await writer.finish()
    assert memory.in_use == 0
    assert memory.peak <= 3 * PART_SIZE  # a part filling, and at most two on the wire
    await res.storage.delete(writer.key)
    assert await pending_multipart_uploads(res) == before


async def test_a_writer_that_cannot_get_memory_in_time_is_unavailable(res: Resources) -> None:
    memory = UploadMemory(MiB, wait=0.2)
    first = res.storage.writer(f"objects/test-{uuid.uuid4().hex}", memory)
    second = res.storage.writer(f"objects/test-{uuid.uuid4().hex}", memory)
    await first.write(os.urandom(MiB))
    with pytest.raises(Unavailable, match="no memory free"):
        await second.write(os.urandom(KiB))
    assert memory.in_use == MiB  # the refused write took nothing
    await first.abort()
    await second.abort()
    assert memory.in_use == 0
    third = res.storage.writer(f"objects/test-{uuid.uuid4().hex}", memory)
    await third.write(os.urandom(MiB))  # the whole budget is free again
    await third.abort()
