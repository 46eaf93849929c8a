"""Malformed, hostile or odd requests get a 400 in the JSON error shape and change nothing.
Each case here was found by schemathesis or named in issue 9 (once a 500, or accepted)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from shared.resources import Resources
from tests.conftest import Stack, TeamKey
from tests.helpers import call, png, snapshot, upload

BOUNDARY = "filecdnBoundary"
MISSING = "file_00000000-0000-4000-8000-000000000000"


def raw_form(*parts: tuple[bytes, bytes]) -> bytes:
    """A multipart body from (part headers, content) pairs, byte for byte as given."""
    body = b""
    for headers, content in parts:
        body += b"--" + BOUNDARY.encode() + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n"
    return body + b"--" + BOUNDARY.encode() + b"--\r\n"


def field(name: str, value: bytes) -> tuple[bytes, bytes]:
    return f'Content-Disposition: form-data; name="{name}"'.encode(), value


def file_part(filename: bytes = b"a.png", data: bytes = b"bytes") -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"', data


async def post_raw(api: aiohttp.ClientSession, body: bytes) -> tuple[int, Any]:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return await call(api, "POST", "/v1/files", data=body, headers=headers)


async def refused(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey, method: str, path: str, **kw: Any
) -> str:
    """The request gets a JSON 400, and rows, objects, uploads and jobs stay as they were."""
    before = await snapshot(res, team.team)
    status, body = await call(api, method, path, **kw)
    assert status == 400, body
    assert set(body) == {"code", "error"}, body
    assert await snapshot(res, team.team) == before
    return str(body["error"])


@pytest.mark.parametrize(
    "filename",
    [b"caf\xe9.png", b"\xff\xfe.png", b"a\x00b.png", b"a\x07b.png"],
    ids=["latin-1", "not-utf8", "nul", "control"],
)
async def test_a_filename_that_is_not_storable_text_is_refused(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey, filename: bytes
) -> None:
    body = raw_form(file_part(filename))
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    msg = await refused(api, res, team, "POST", "/v1/files", data=body, headers=headers)
    assert "file name" in msg or "multipart" in msg


async def test_a_utf8_filename_is_kept_exactly(api: aiohttp.ClientSession) -> None:
    status, body = await post_raw(api, raw_form(file_part("über [/bold].png".encode())))
    assert status == 200 and body["filename"] == "über [/bold].png"


async def test_a_part_header_with_control_characters_is_refused(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    body = raw_form(field("x\x0fy", b"1"), file_part())
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    msg = await refused(api, res, team, "POST", "/v1/files", data=body, headers=headers)
    assert msg == "malformed multipart body"


@pytest.mark.parametrize(
    "purpose", [b"a\x00b", b"\xff", b"x" * 1025], ids=["nul", "not-utf8", "too-long"]
)
async def test_a_purpose_that_is_not_storable_text_is_refused(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey, purpose: bytes
) -> None:
    body = raw_form(field("purpose", purpose), file_part())
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    assert "purpose" in await refused(
        api, res, team, "POST", "/v1/files", data=body, headers=headers
    )


async def test_openais_expiry_pair_may_straddle_the_file_part(
    api: aiohttp.ClientSession,
) -> None:
    body = raw_form(
        field("expires_after[anchor]", b"created_at"),
        file_part(),
        field("expires_after[seconds]", b"7200"),
    )
    status, made = await post_raw(api, body)
    assert status == 200, made
    assert made["expires_at"] - made["created_at"] == 7200


@pytest.mark.parametrize(
    "query",
    [
        "purpose=a%00b",
        "after=",
        "after=file_x",
        f"after={MISSING}%0A",
        "limit=%D9%A1",  # an Arabic-Indic 1: a digit to Python, not to JSON Schema
        "limit=1.0",
        "limit=" + "9" * 5000,
        "order=sideways",
        "pagination_token=%00",
    ],
)
async def test_bad_list_parameters_are_refused(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey, query: str
) -> None:
    await refused(api, res, team, "GET", f"/v1/files?{query}")


async def test_a_filter_at_its_length_limit_fits_the_request_line(
    api: aiohttp.ClientSession,
) -> None:
    """4096 characters of 3-byte UTF-8, percent-encoded: a 36 KiB request line (aiohttp's
    default limit, 8 KiB, answered it in plain text before any handler ran)."""
    status, body = await call(api, "GET", "/v1/files", params={"filter": "name:" + "€" * 4091})
    assert status == 200 and body["data"] == []
    status, body = await call(api, "GET", "/v1/files", params={"filter": "name:" + "€" * 4092})
    assert status == 400 and body["error"].startswith("invalid filter: longer than 4096")


async def test_a_huge_limit_is_clamped(api: aiohttp.ClientSession) -> None:
    status, body = await call(api, "GET", "/v1/files?limit=" + "9" * 400)
    assert status == 200 and body["data"] == []


@pytest.mark.parametrize(
    "body",
    [b"[" * 50_000 + b"]" * 50_000, b'{"expires_after": "3600"}', b'{"expires_after": 1e400}'],
    ids=["nested", "string", "infinite"],
)
async def test_bad_public_url_bodies_are_refused(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey, body: bytes
) -> None:
    f = await upload(api, png())
    msg = await refused(api, res, team, "POST", f"/v1/files/{f['id']}/public-url", data=body)
    assert "JSON object" in msg or "expires_after" in msg


async def test_an_integral_number_is_an_integer(api: aiohttp.ClientSession) -> None:
    """As in JSON Schema, which the OpenAPI document speaks: 7200.0 is the integer 7200."""
    f = await upload(api, png())
    body = json.dumps({"expires_after": 7200.0})
    status, made = await call(api, "POST", f"/v1/files/{f['id']}/public-url", data=body)
    assert status == 200, made
    assert made["expires_at"] - f["created_at"] in range(7200, 7205)


async def test_an_empty_format_is_refused(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    f = await upload(api, png())
    await refused(api, res, team, "GET", f"/v1/files/{f['id']}/content?format=")


@pytest.mark.parametrize(
    ("range_", "status", "content_range", "part"),
    [
        ("bytes=10-19", 206, "bytes 10-19/100", slice(10, 20)),
        ("bytes=-5", 206, "bytes 95-99/100", slice(95, 100)),
        ("bytes=90-", 206, "bytes 90-99/100", slice(90, 100)),
        ("bytes=90-1000", 206, "bytes 90-99/100", slice(90, 100)),
        ("bytes=19-10", 200, None, slice(0, 100)),  # invalid: ignored
        ("bytes=0-1,5-6", 200, None, slice(0, 100)),  # several: the whole file
        ("bytes=" + "9" * 30 + "-", 200, None, slice(0, 100)),  # too many digits: ignored
        ("items=0-5", 200, None, slice(0, 100)),
    ],
)
async def test_content_ranges_are_judged_like_the_edges(
    api: aiohttp.ClientSession,
    range_: str,
    status: int,
    content_range: str | None,
    part: slice,
) -> None:
    data = png(100)
    f = await upload(api, data)
    async with api.get(f"/v1/files/{f['id']}/content", headers={"Range": range_}) as r:
        assert r.status == status
        assert r.headers.get("Content-Range") == content_range
        assert await r.read() == data[part]


async def test_a_range_past_the_end_is_416_with_the_size(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png(100))
    async with api.get(f"/v1/files/{f['id']}/content", headers={"Range": "bytes=100-"}) as r:
        assert r.status == 416 and r.headers["Content-Range"] == "bytes */100"
        assert (await r.json())["error"] == "requested range not satisfiable"


async def test_head_of_content_sends_the_headers_and_no_body(
    stack: Stack, team: TeamKey, api: aiohttp.ClientSession
) -> None:
    f = await upload(api, png(100))
    host, port = stack.api_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = (
        f"HEAD /v1/files/{f['id']}/content HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {team.key}\r\nRange: bytes=10-19\r\n\r\n"
        f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    writer.write(request.encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206") and b"Content-Length: 10" in head
    assert b"Content-Range: bytes 10-19/100" in head
    # The next response on the connection follows at once: HEAD carried no body.
    assert rest.startswith(b"HTTP/1.1 200"), rest[:100]
