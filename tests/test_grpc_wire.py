"""What goes over the gRPC wire: chunk sizes, presence of optional fields, one domain for
REST and gRPC (same files, same cursors; the error table is `test_error_table.py`)."""

from __future__ import annotations

from typing import Any

import aiohttp
import grpc
import pytest
from xai_sdk.proto import files_pb2

from tests.conftest import TeamKey
from tests.helpers import auth, call, data, init, png, stream, upload, uploaded

MiB = 1024 * 1024


async def chunks_of(stub: Any, team: TeamKey, file_id: str, fmt: int | None = None) -> list[bytes]:
    request = files_pb2.RetrieveFileContentRequest(file_id=file_id, format=fmt)
    return [c.data async for c in stub.RetrieveFileContent(request, metadata=auth(team))]


async def test_content_streams_in_chunks_of_at_most_3_mib(stub: Any, team: TeamKey) -> None:
    payload = png(7 * MiB + 5)
    pieces = [data(payload[i : i + 3 * MiB]) for i in range(0, len(payload), 3 * MiB)]
    f = await stub.UploadFile(stream([init("big.png"), *pieces]), metadata=auth(team))  # as the SDK
    got = await chunks_of(stub, team, f.id)
    assert [len(c) for c in got] == [3 * MiB, 3 * MiB, MiB + 5]
    assert b"".join(got) == payload


async def test_empty_file_is_only_an_init_message(stub: Any, team: TeamKey) -> None:
    f = await stub.UploadFile(stream([init("empty.txt")]), metadata=auth(team))
    assert f.size == 0 and f.filename == "empty.txt"
    assert await chunks_of(stub, team, f.id) == []


async def test_text_format_serves_text_files(stub: Any, team: TeamKey) -> None:
    f = await stub.UploadFile(
        stream([init("notes.txt"), data(b"hello "), data(b"world")]), metadata=auth(team)
    )
    for fmt in (files_pb2.DOWNLOAD_FORMAT_TEXT, files_pb2.DOWNLOAD_FORMAT_ORIGINAL, None):
        assert b"".join(await chunks_of(stub, team, f.id, fmt)) == b"hello world"


async def test_optional_fields_are_absent_not_empty(stub: Any, team: TeamKey) -> None:
    f = await uploaded(stub, team)
    for name in ("expires_at", "public_url", "public_url_expires_at"):
        assert not f.HasField(name), name
    made = await stub.CreatePublicUrl(
        files_pb2.CreatePublicUrlRequest(file_id=f.id), metadata=auth(team)
    )
    assert not made.HasField("expires_at")
    got = await stub.RetrieveFile(files_pb2.RetrieveFileRequest(file_id=f.id), metadata=auth(team))
    assert got.HasField("public_url") and not got.HasField("public_url_expires_at")
    # Setting expires_after to 0 is "present": out of range, unlike unset (indefinite).
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreatePublicUrl(
            files_pb2.CreatePublicUrlRequest(file_id=f.id, expires_after=0), metadata=auth(team)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_limit_zero_means_the_default_and_an_empty_page_has_no_token(
    stub: Any, team: TeamKey
) -> None:
    made = [await uploaded(stub, team) for _ in range(3)]
    page = await stub.ListFiles(files_pb2.ListFilesRequest(limit=0), metadata=auth(team))
    assert [f.id for f in page.data] == [f.id for f in made]
    assert page.HasField("pagination_token")  # as REST: every non-empty page has one
    last = await stub.ListFiles(
        files_pb2.ListFilesRequest(pagination_token=page.pagination_token), metadata=auth(team)
    )
    assert list(last.data) == [] and not last.HasField("pagination_token")


async def test_rest_and_grpc_see_the_same_files_and_cursors(
    stub: Any, team: TeamKey, api: aiohttp.ClientSession
) -> None:
    via_grpc = await uploaded(stub, team, png(3000), "g.png")
    await stub.CreatePublicUrl(
        files_pb2.CreatePublicUrlRequest(file_id=via_grpc.id, expires_after=7200),
        metadata=auth(team),
    )
    via_rest = await upload(api, png(), "r.png")
    status, body = await call(api, "GET", f"/v1/files/{via_grpc.id}")
    assert status == 200
    got = await stub.RetrieveFile(
        files_pb2.RetrieveFileRequest(file_id=via_grpc.id), metadata=auth(team)
    )
    assert (body["id"], body["filename"], body["bytes"], body["created_at"]) == (
        got.id,
        got.filename,
        got.size,
        got.created_at.seconds,
    )
    assert body["public_url"] == got.public_url
    assert body["public_url_expires_at"] == got.public_url_expires_at.seconds
    # A REST cursor continues a gRPC listing of the same query (ascending by creation).
    status, first = await call(api, "GET", "/v1/files?limit=1&order=asc")
    assert [f["id"] for f in first["data"]] == [via_grpc.id]
    rest = await stub.ListFiles(
        files_pb2.ListFilesRequest(limit=1, pagination_token=first["pagination_token"]),
        metadata=auth(team),
    )
    assert [f.id for f in rest.data] == [via_rest["id"]]
