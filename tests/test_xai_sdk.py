"""The official xai-sdk, unchanged, against our gRPC server: the public-URL guide's examples.

Clients are built exactly as a user would (`Client(api_key=..., api_host="localhost:PORT")`).
The sync client blocks, so these are plain sync tests; the aio client has its own test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from xai_sdk import AsyncClient, Client

from tests.conftest import Stack, TeamKey
from tests.helpers import fetch, fetch_sync, jpeg, pdf, png, readme_snippet, run_snippet

MiB = 1024 * 1024


@pytest.fixture
def client(stack: Stack, team: TeamKey) -> Iterator[Client]:
    c = Client(api_key=team.key, api_host=stack.grpc_target)
    yield c
    c.close()


def rpc_error(fn: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kwargs)
    return err.value


def test_upload_from_a_path(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "diagram.png"
    path.write_bytes(data := png(5000))
    file = client.files.upload(str(path))
    assert file.id.startswith("file_") and file.filename == "diagram.png"
    assert file.size == len(data)
    assert abs(file.created_at.seconds - time.time()) < 10 and file.created_at.nanos == 0
    for unset in ("expires_at", "public_url", "public_url_expires_at"):
        assert not file.HasField(unset), unset
    assert client.files.content(file.id) == data


def test_upload_from_bytes_with_expires_after(client: Client) -> None:
    as_timedelta = client.files.upload(png(), filename="cover.png", expires_after=timedelta(days=1))
    assert as_timedelta.filename == "cover.png"
    assert as_timedelta.expires_at.seconds - as_timedelta.created_at.seconds == 86400
    as_int = client.files.upload(png(), filename="c.png", expires_after=7200)
    assert as_int.expires_at.seconds - as_int.created_at.seconds == 7200


def test_public_url_without_expiry_is_indefinite_and_serves(client: Client) -> None:
    data = png(4000)
    file = client.files.upload(data, filename="diagram.png")
    resp = client.files.create_public_url(file.id)
    assert resp.public_url.endswith(f"/{file.id}.png")
    assert not resp.HasField("expires_at")
    assert fetch_sync(resp.public_url) == (200, data)
    got = client.files.get(file.id)
    assert got.public_url == resp.public_url and not got.HasField("public_url_expires_at")


def test_create_again_returns_the_same_url(client: Client) -> None:
    file = client.files.upload(pdf(), filename="report.pdf")
    first = client.files.create_public_url(file.id)
    assert client.files.create_public_url(file.id) == first


def test_new_expires_after_updates_the_expiry_in_place(client: Client) -> None:
    file = client.files.upload(jpeg(), filename="photo.jpg")
    resp1 = client.files.create_public_url(file.id, expires_after=86400)
    resp3 = client.files.create_public_url(file.id, expires_after=timedelta(days=7))
    assert resp1.public_url == resp3.public_url
    assert resp3.expires_at.seconds > resp1.expires_at.seconds
    assert abs(resp3.expires_at.seconds - (time.time() + 7 * 86400)) < 10
    assert client.files.get(file.id).public_url_expires_at == resp3.expires_at


def test_url_inherits_the_files_expiry(client: Client) -> None:
    file = client.files.upload(png(), filename="temp.png", expires_after=timedelta(hours=2))
    resp = client.files.create_public_url(file.id)
    assert resp.HasField("expires_at") and resp.expires_at == file.expires_at
    assert client.files.get(file.id).public_url_expires_at == file.expires_at


def test_url_cannot_outlive_its_file(client: Client) -> None:
    file = client.files.upload(png(), filename="temp.png", expires_after=timedelta(hours=2))
    err = rpc_error(client.files.create_public_url, file.id, expires_after=timedelta(hours=3))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot outlive its file" in err.details()


def test_revoke_twice_then_a_new_url(client: Client) -> None:
    data = png()
    file = client.files.upload(data, filename="a.png")
    url = client.files.create_public_url(file.id).public_url
    first = client.files.revoke_public_url(file.id)
    assert (first.file_id, first.revoked, first.public_url) == (file.id, True, url)
    second = client.files.revoke_public_url(file.id)
    assert (second.file_id, second.revoked) == (file.id, False)
    assert not second.HasField("public_url")
    assert fetch_sync(url)[0] == 404
    assert not client.files.get(file.id).HasField("public_url")  # the file stays
    assert client.files.content(file.id) == data
    again = client.files.create_public_url(file.id).public_url
    assert again != url and fetch_sync(again) == (200, data)


def test_list_with_filter(client: Client) -> None:
    shared = client.files.upload(png(), filename="shared.png")
    private = client.files.upload(png(), filename="private.png")
    url = client.files.create_public_url(shared.id).public_url
    with_url = client.files.list(filter="public_url != null")
    assert [(f.id, f.public_url) for f in with_url.data] == [(shared.id, url)]
    without = client.files.list(filter="public_url = null")
    assert [f.id for f in without.data] == [private.id]
    assert [f.id for f in client.files.list(filter='name:"PRIV"').data] == [private.id]


def test_list_orders_sorts_and_pages_like_rest(client: Client) -> None:
    made = [client.files.upload(png(1000 + i), filename=f"{'edcba'[i]}.png") for i in range(5)]
    ids = [f.id for f in made]
    # No `order` reaches the server as ASCENDING (proto3 enums cannot be unset).
    assert [f.id for f in client.files.list().data] == ids
    assert [f.id for f in client.files.list(order="desc").data] == ids[::-1]
    by_name = client.files.list(sort_by="filename", order="asc").data
    assert [f.filename for f in by_name] == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    by_size = client.files.list(sort_by="size", order="desc").data
    assert [f.size for f in by_size] == [1004, 1003, 1002, 1001, 1000]

    seen: list[str] = []
    token = None
    for _ in range(10):
        page = client.files.list(limit=2, order="desc", pagination_token=token)
        seen += [f.id for f in page.data]
        if not page.HasField("pagination_token"):
            assert not page.data  # only an empty page has no token
            break
        token = page.pagination_token
    assert seen == ids[::-1]
    # Upstream's example token is the last file id: accepted too.
    after = client.files.list(limit=2, order="asc", pagination_token=ids[1]).data
    assert [f.id for f in after] == ids[2:4]


def test_get_content_and_delete(client: Client) -> None:
    data = png(7 * MiB + 123)  # more than two of the SDK's 3 MiB chunks, both ways
    file = client.files.upload(data, filename="big.png")
    url = client.files.create_public_url(file.id).public_url
    got = client.files.get(file.id)
    assert (got.id, got.filename, got.size, got.public_url) == (file.id, "big.png", len(data), url)
    assert client.files.content(file.id) == data
    deleted = client.files.delete(file.id)
    assert (deleted.id, deleted.deleted) == (file.id, True)
    assert rpc_error(client.files.get, file.id).code() == grpc.StatusCode.NOT_FOUND
    assert rpc_error(client.files.delete, file.id).code() == grpc.StatusCode.NOT_FOUND
    assert fetch_sync(url)[0] == 404  # deleting the file revoked its URL


def test_a_wrong_key_is_unauthenticated(stack: Stack) -> None:
    with Client(api_key="fcdn_wrong", api_host=stack.grpc_target) as c:
        err = rpc_error(c.files.list)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.details() == "invalid or revoked API key"  # REST's message
        assert rpc_error(c.files.upload, png(), filename="a.png").code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )


def test_insecure_channel_uploads_arrive_without_a_key_and_are_refused(
    stack: Stack, team: TeamKey
) -> None:
    """The SDK's own bug: with use_insecure_channel its interceptors skip client streams."""
    port = stack.grpc_target.split(":")[1]
    with Client(api_key=team.key, api_host=f"127.0.0.1:{port}", use_insecure_channel=True) as c:
        assert c.files.list().data is not None  # unary calls carry the key
        err = rpc_error(c.files.upload, png(), filename="a.png")
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing API key" in err.details()


async def test_async_client_runs_the_same_examples(stack: Stack, team: TeamKey) -> None:
    client = AsyncClient(api_key=team.key, api_host=stack.grpc_target)
    try:
        data = png(3 * MiB + 10)
        file = await client.files.upload(
            data, filename="async.png", expires_after=timedelta(days=1)
        )
        resp = await client.files.create_public_url(file.id)
        assert resp.expires_at == file.expires_at  # inherited
        assert await fetch(resp.public_url) == (200, data)
        again = await client.files.create_public_url(file.id, expires_after=3600)
        assert again.public_url == resp.public_url
        assert again.expires_at.seconds < resp.expires_at.seconds
        listed = await client.files.list(filter="public_url != null")
        assert [f.id for f in listed.data] == [file.id]
        assert (await client.files.get(file.id)).public_url_expires_at == again.expires_at
        assert await client.files.content(file.id) == data
        revoked = await client.files.revoke_public_url(file.id)
        assert revoked.revoked and revoked.public_url == resp.public_url
        assert not (await client.files.revoke_public_url(file.id)).revoked
        assert (await fetch(resp.public_url))[0] == 404
        assert (await client.files.delete(file.id)).deleted
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.files.get(file.id)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await client.close()


def test_the_readme_xai_sdk_snippet_runs_as_shown(
    stack: Stack, team: TeamKey, tmp_path: Path
) -> None:
    lines = run_snippet(readme_snippet("from xai_sdk import"), stack, team, tmp_path)
    url, listed = lines
    assert url.startswith(stack.edge_url + "/") and url.endswith(".png")
    assert listed.split() == [url.rsplit("/", 1)[1].removesuffix(".png"), "hello.png", url]
    assert fetch_sync(url)[0] == 404  # the snippet revoked it and deleted the file
