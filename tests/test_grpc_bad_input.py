"""Bad input over gRPC gets the right status code, REST's message, and leaves nothing behind.

Raw `grpc.aio` stubs, because the official SDK cannot produce malformed upload streams.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any

import grpc
import pytest
from xai_sdk.proto import files_pb2

from shared.resources import Resources
from tests.conftest import Stack, TeamKey
from tests.helpers import (
    PNG,
    auth,
    data,
    init,
    pending_multipart_uploads,
    snapshot,
    stream,
    uploaded,
    wait_for,
    wait_for_log,
)

MiB = 1024 * 1024
MISSING = "file_00000000-0000-4000-8000-000000000000"


async def upload_fails(
    stub: Any, team: TeamKey, res: Resources, chunks: Iterable[Any], code: grpc.StatusCode
) -> str:
    """The upload is refused with `code`, and rows, objects, uploads and jobs are unchanged."""
    before = await snapshot(res, team.team)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UploadFile(stream(chunks), metadata=auth(team))
    assert err.value.code() == code, err.value.details()
    assert await snapshot(res, team.team) == before
    return str(err.value.details())


async def test_upload_with_no_init_message_is_invalid_argument(
    stub: Any, team: TeamKey, res: Resources
) -> None:
    msg = await upload_fails(stub, team, res, [data(PNG)], grpc.StatusCode.INVALID_ARGUMENT)
    assert "init" in msg
    msg = await upload_fails(stub, team, res, [], grpc.StatusCode.INVALID_ARGUMENT)
    assert "init" in msg


async def test_upload_with_two_init_messages_is_invalid_argument(
    stub: Any, team: TeamKey, res: Resources
) -> None:
    msg = await upload_fails(stub, team, res, [init(), init()], grpc.StatusCode.INVALID_ARGUMENT)
    assert "exactly one init" in msg
    # A second init after 6 MiB (a multipart upload is open by then): it is aborted too.
    chunks = [init(), data(os.urandom(3 * MiB)), data(os.urandom(3 * MiB)), init()]
    await upload_fails(stub, team, res, chunks, grpc.StatusCode.INVALID_ARGUMENT)


async def test_data_before_init_is_invalid_argument(
    stub: Any, team: TeamKey, res: Resources
) -> None:
    msg = await upload_fails(
        stub, team, res, [data(PNG), init(), data(PNG)], grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "first message" in msg


async def test_a_message_with_neither_init_nor_data_is_invalid_argument(
    stub: Any, team: TeamKey, res: Resources
) -> None:
    chunks = [init(), files_pb2.UploadFileChunk()]
    await upload_fails(stub, team, res, chunks, grpc.StatusCode.INVALID_ARGUMENT)


async def test_bad_init_fields_are_invalid_argument(
    stub: Any, team: TeamKey, res: Resources, stack: Stack
) -> None:
    too_long = stack.settings.expires_after_max + 1
    for chunks in (
        [init(expires_after=too_long), data(PNG)],
        [init(expires_after=-1), data(PNG)],
        [init(name=""), data(PNG)],
        [init(name="a\x00b"), data(PNG)],
    ):
        await upload_fails(stub, team, res, chunks, grpc.StatusCode.INVALID_ARGUMENT)


async def test_oversized_stream_is_resource_exhausted(
    stub: Any, team: TeamKey, res: Resources, stack: Stack
) -> None:
    limit = stack.settings.max_upload_bytes
    piece = data(os.urandom(3 * MiB))  # the SDK's chunk size
    chunks = [init("big.bin")] + [piece] * (limit // (3 * MiB) + 1)
    assert sum(len(c.data) for c in chunks) > limit
    msg = await upload_fails(stub, team, res, chunks, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert msg == f"file exceeds the maximum upload size of {limit} bytes"  # REST's message


@pytest.mark.parametrize("sent_mib", [0, 12], ids=["before any part", "multipart open"])
async def test_cancelling_an_upload_mid_stream_leaves_nothing(
    stub: Any, team: TeamKey, res: Resources, stack: Stack, sent_mib: int
) -> None:
    before = await snapshot(res, team.team)
    sent = asyncio.Event()
    request_id = uuid.uuid4().hex

    async def chunks() -> AsyncIterator[Any]:
        yield init("x.png")
        yield data(PNG)
        for _ in range(sent_mib // 3):
            yield data(os.urandom(3 * MiB))
        sent.set()
        await asyncio.sleep(3600)  # the client never finishes the stream

    call = stub.UploadFile(chunks(), metadata=(*auth(team), ("x-request-id", request_id)))
    await sent.wait()
    # The server holds the upload open (and, past 5 MiB, has parts in S3) when we cancel.
    started = await wait_for_log(stack, "api", event="upload started", request_id=request_id)
    if sent_mib:

        async def parts_stored() -> bool:
            return await pending_multipart_uploads(res) > before[2]

        await wait_for(parts_stored, timeout=10, what="the server to store a part")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # Once the server has thrown the upload away, no commit can follow it.
    await wait_for_log(stack, "api", event="upload aborted", file_id=started["file_id"])
    assert await snapshot(res, team.team) == before


def _file_rpcs(stub: Any, team: TeamKey, file_id: str) -> list[Coroutine[Any, Any, Any]]:
    """Every RPC that names a file, but revoke (which answers revoked=false for nothing)."""
    md = auth(team)
    return [
        stub.RetrieveFile(files_pb2.RetrieveFileRequest(file_id=file_id), metadata=md),
        stub.DeleteFile(files_pb2.DeleteFileRequest(file_id=file_id), metadata=md),
        stub.CreatePublicUrl(files_pb2.CreatePublicUrlRequest(file_id=file_id), metadata=md),
        _drain(
            stub.RetrieveFileContent(
                files_pb2.RetrieveFileContentRequest(file_id=file_id), metadata=md
            )
        ),
    ]


async def test_unknown_file_id_is_not_found_everywhere(stub: Any, team: TeamKey) -> None:
    md = auth(team)
    for c in _file_rpcs(stub, team, MISSING):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == f"file {MISSING} not found"  # REST's message
    # Revoke is idempotent: nothing to revoke is not an error.
    out = await stub.RevokePublicUrl(files_pb2.RevokePublicUrlRequest(file_id=MISSING), metadata=md)
    assert (out.file_id, out.revoked, out.HasField("public_url")) == (MISSING, False, False)


async def _drain(call: Any) -> list[Any]:
    return [chunk async for chunk in call]


async def test_malformed_file_id_is_invalid_argument(stub: Any, team: TeamKey) -> None:
    md = auth(team)
    for bad in ("nope", "", "file_123", MISSING.upper()):
        revoke = stub.RevokePublicUrl(files_pb2.RevokePublicUrlRequest(file_id=bad), metadata=md)
        for c in [*_file_rpcs(stub, team, bad), revoke]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
            assert "malformed file id" in str(err.value.details())


async def test_another_teams_file_looks_unknown(stub: Any, team: TeamKey, res: Resources) -> None:
    from tests.conftest import new_team

    other = await new_team(res)
    theirs = await uploaded(stub, other)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RetrieveFile(
            files_pb2.RetrieveFileRequest(file_id=theirs.id), metadata=auth(team)
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_filter_is_invalid_argument_naming_the_position(stub: Any, team: TeamKey) -> None:
    for bad in ('colour = "red"', "size_bytes >", "name = 'x' AND", "(public_url != null"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListFiles(files_pb2.ListFilesRequest(filter=bad), metadata=auth(team))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "position" in str(err.value.details()), err.value.details()


async def test_bad_list_arguments_are_invalid_argument(stub: Any, team: TeamKey) -> None:
    for request in (
        files_pb2.ListFilesRequest(limit=-1),
        files_pb2.ListFilesRequest(order=7),
        files_pb2.ListFilesRequest(sort_by=9),
        files_pb2.ListFilesRequest(pagination_token="forged.token"),
        files_pb2.ListFilesRequest(pagination_token=MISSING),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListFiles(request, metadata=auth(team))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request


async def test_text_format_of_a_binary_file_is_failed_precondition(
    stub: Any, team: TeamKey
) -> None:
    f = await uploaded(stub, team)
    request = files_pb2.RetrieveFileContentRequest(
        file_id=f.id, format=files_pb2.DOWNLOAD_FORMAT_TEXT
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _drain(stub.RetrieveFileContent(request, metadata=auth(team)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "text/*" in str(err.value.details())


async def test_public_url_refusals_keep_rest_codes_and_messages(
    stub: Any, team: TeamKey, stack: Stack
) -> None:
    text = await uploaded(stub, team, b"hello", "notes.txt")
    png = await uploaded(stub, team)
    md = auth(team)
    for file_id, expires_after, needle in (
        (text.id, None, "only PNG, JPEG, MP4 and PDF"),
        (png.id, stack.settings.expires_after_max + 1, "expires_after must be between"),
        (png.id, 0, "expires_after must be between"),
    ):
        request = files_pb2.CreatePublicUrlRequest(file_id=file_id, expires_after=expires_after)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreatePublicUrl(request, metadata=md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in str(err.value.details())


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer fcdn_not-a-key"),),
        (("authorization", "Bearer "),),
        (("authorization", "Basic abc"),),
    ],
    ids=["no key", "unknown key", "empty key", "not bearer"],
)
async def test_missing_or_bad_key_is_unauthenticated_on_every_rpc(
    stub: Any, team: TeamKey, res: Resources, metadata: tuple[tuple[str, str], ...]
) -> None:
    theirs = await uploaded(stub, team)
    before = await snapshot(res, team.team)
    calls = [
        stub.UploadFile(stream([init(), data(PNG)]), metadata=metadata),
        stub.ListFiles(files_pb2.ListFilesRequest(), metadata=metadata),
        stub.RetrieveFile(files_pb2.RetrieveFileRequest(file_id=theirs.id), metadata=metadata),
        stub.DeleteFile(files_pb2.DeleteFileRequest(file_id=theirs.id), metadata=metadata),
        _drain(
            stub.RetrieveFileContent(
                files_pb2.RetrieveFileContentRequest(file_id=theirs.id), metadata=metadata
            )
        ),
        stub.CreatePublicUrl(
            files_pb2.CreatePublicUrlRequest(file_id=theirs.id), metadata=metadata
        ),
        stub.RevokePublicUrl(
            files_pb2.RevokePublicUrlRequest(file_id=theirs.id), metadata=metadata
        ),
    ]
    for c in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "API key" in str(err.value.details())
    assert await snapshot(res, team.team) == before


async def test_a_revoked_key_is_unauthenticated(stub: Any, res: Resources) -> None:
    from shared import teams
    from tests.conftest import new_team

    tk = await new_team(res)
    await stub.ListFiles(files_pb2.ListFilesRequest(), metadata=auth(tk))
    await teams.revoke_key(res.db, tk.key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListFiles(files_pb2.ListFilesRequest(), metadata=auth(tk))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
