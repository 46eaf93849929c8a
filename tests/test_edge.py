"""The edge's HTTP semantics, against the stack's edge (2 workers) with real Redis and S3:
headers, byte ranges, conditional requests, methods, and the one 404 for every dead URL."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from email.utils import formatdate, parsedate_to_datetime

import aiohttp
import pytest

from shared import token_cache
from shared.resources import Resources
from tests.conftest import Stack
from tests.helpers import Public, get, mp4, png, revoke, share

SIZE = 5000


@pytest.fixture
async def small(api: aiohttp.ClientSession) -> Public:
    return await share(api, png(SIZE), "photo.png")


# --- a 200 and its headers ------------------------------------------------------------------


async def test_get_sends_the_bytes_with_type_length_and_validators(small: Public) -> None:
    status, h, body = await get(small.url)
    assert status == 200 and body == small.data
    assert h["Content-Type"] == "image/png"
    assert h["Content-Length"] == str(SIZE)
    assert h["ETag"].startswith('"') and h["ETag"].endswith('"')
    assert parsedate_to_datetime(h["Last-Modified"]).tzinfo is not None
    assert h["Accept-Ranges"] == "bytes"


async def test_every_response_forbids_sniffing_and_allows_any_origin(small: Public) -> None:
    for url in (small.url, small.url + "x"):  # a 200 and a 404
        _, h, _ = await get(url)
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Access-Control-Allow-Origin"] == "*"
    _, h, _ = await get(small.url, Origin="https://example.com")
    assert "Content-Range" in h["Access-Control-Expose-Headers"]


async def test_disposition_is_inline_with_the_url_name_encoded_safely(small: Public) -> None:
    _, h, _ = await get(small.url)
    name = small.url.rsplit("/", 1)[1]
    assert h["Content-Disposition"] == f"inline; filename=\"{name}\"; filename*=UTF-8''{name}"


async def test_cache_control_makes_every_cache_revalidate_by_default(small: Public) -> None:
    _, h, _ = await get(small.url)
    assert h["Cache-Control"] == "public, no-cache"
    _, h, _ = await get(small.url + "x")
    assert h["Cache-Control"] == "no-store"


async def test_head_has_the_get_headers_and_no_body(small: Public) -> None:
    status, h, body = await get(small.url, "HEAD")
    _, g, _ = await get(small.url)
    assert status == 200 and body == b""
    for name in ("Content-Type", "Content-Length", "ETag", "Last-Modified", "Accept-Ranges"):
        assert h[name] == g[name]


async def test_other_methods_get_405_with_allow(small: Public) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, h, _ = await get(small.url, method)
        assert status == 405 and h["Allow"] == "GET, HEAD, OPTIONS", method


async def test_cors_preflight_allows_range_and_conditional_headers(small: Public) -> None:
    status, h, _ = await get(
        small.url,
        "OPTIONS",
        Origin="https://example.com",
        **{"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range"},
    )
    assert status == 204
    assert h["Access-Control-Allow-Origin"] == "*"
    assert "GET" in h["Access-Control-Allow-Methods"]
    assert "Range" in h["Access-Control-Allow-Headers"]


# --- byte ranges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, SIZE - 1),  # open range
        ("bytes=-50", SIZE - 50, SIZE - 1),  # suffix
        ("bytes=4990-999999", 4990, SIZE - 1),  # past the end: clamped
        ("bytes=-999999", 0, SIZE - 1),  # suffix longer than the object
        ("bytes=7-7", 7, 7),
        ("bytes=0-", 0, SIZE - 1),
    ],
)
async def test_a_single_range_gets_206_with_content_range(
    small: Public, header: str, first: int, last: int
) -> None:
    status, h, body = await get(small.url, Range=header)
    assert status == 206  # even for all of it: players probe with `bytes=0-`
    assert h["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    assert h["Content-Length"] == str(last - first + 1)
    assert body == small.data[first : last + 1]


@pytest.mark.parametrize("header", ["bytes=5000-", "bytes=99999-100000", "bytes=-0"])
async def test_an_unsatisfiable_range_gets_416_with_the_size(small: Public, header: str) -> None:
    status, h, body = await get(small.url, Range=header)
    assert status == 416 and body == b""
    assert h["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("header", ["bytes=abc", "items=0-5", "bytes=5-1", "bytes=0-1,5-9"])
async def test_unusable_or_multiple_ranges_get_the_whole_object(small: Public, header: str) -> None:
    status, _, body = await get(small.url, Range=header)
    assert status == 200 and body == small.data


async def test_head_with_a_range_describes_the_partial_response(small: Public) -> None:
    status, h, body = await get(small.url, "HEAD", Range="bytes=10-19")
    assert status == 206 and body == b""
    assert h["Content-Range"] == f"bytes 10-19/{SIZE}" and h["Content-Length"] == "10"


# --- conditional requests -------------------------------------------------------------------


async def test_if_none_match_with_the_etag_gets_304_without_a_body(small: Public) -> None:
    _, h, _ = await get(small.url)
    for value in (h["ETag"], f'"other", {h["ETag"]}', f"W/{h['ETag']}", "*"):
        status, r, body = await get(small.url, **{"If-None-Match": value})
        assert status == 304 and body == b"", value
        assert r["ETag"] == h["ETag"] and r["Cache-Control"] == "public, no-cache"
    status, _, body = await get(small.url, **{"If-None-Match": '"other"'})
    assert status == 200 and body == small.data


async def test_if_modified_since_gets_304_unless_the_file_is_newer(small: Public) -> None:
    _, h, _ = await get(small.url)
    last_modified = parsedate_to_datetime(h["Last-Modified"]).timestamp()
    status, _, _ = await get(small.url, **{"If-Modified-Since": h["Last-Modified"]})
    assert status == 304
    earlier = formatdate(last_modified - 3600, usegmt=True)
    status, _, body = await get(small.url, **{"If-Modified-Since": earlier})
    assert status == 200 and body == small.data
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    status, _, _ = await get(
        small.url, **{"If-None-Match": '"other"', "If-Modified-Since": h["Last-Modified"]}
    )
    assert status == 200


async def test_if_range_honours_the_range_only_for_the_current_validator(small: Public) -> None:
    _, h, _ = await get(small.url)
    status, _, body = await get(small.url, Range="bytes=0-9", **{"If-Range": h["ETag"]})
    assert status == 206 and body == small.data[:10]
    status, _, body = await get(small.url, Range="bytes=0-9", **{"If-Range": h["Last-Modified"]})
    assert status == 206 and body == small.data[:10]
    status, _, body = await get(small.url, Range="bytes=0-9", **{"If-Range": '"stale"'})
    assert status == 200 and body == small.data


async def test_if_match_with_another_etag_gets_412(small: Public) -> None:
    status, _, _ = await get(small.url, **{"If-Match": '"other"'})
    assert status == 412
    _, h, _ = await get(small.url)
    status, _, body = await get(small.url, **{"If-Match": h["ETag"]})
    assert status == 200 and body == small.data


# --- larger objects: not in memory, streamed from S3 then from the disk cache ---------------


async def test_a_large_object_streams_whole_and_in_ranges(api: aiohttp.ClientSession) -> None:
    big = await share(api, mp4(3 * 1024 * 1024 + 17), "clip.mp4")
    for _ in range(3):  # S3 first, then (once filled) the disk cache: the same answers
        status, h, body = await get(big.url)
        assert status == 200 and body == big.data and h["Content-Type"] == "video/mp4"
        status, h, body = await get(big.url, Range="bytes=1000000-1065535")
        assert status == 206 and body == big.data[1000000:1065536]
        assert h["Content-Range"] == f"bytes 1000000-1065535/{len(big.data)}"
        status, _, body = await get(big.url, Range=f"bytes=-{100}")
        assert status == 206 and body == big.data[-100:]


# --- dead URLs: one 404 ---------------------------------------------------------------------


async def test_a_record_past_its_deadline_is_404_even_while_redis_still_has_it(
    api: aiohttp.ClientSession, res: Resources, small: Public
) -> None:
    # The edge compares the deadline itself: a TTL that has not fired yet changes nothing.
    record = await res.tokens.get(small.token)
    assert record is not None
    past = dataclasses.replace(record, deadline_ms=token_cache.now_ms() - 1)
    await res.redis.set(token_cache.key(small.token), past.encode())  # as if the TTL lagged
    status, h, body = await get(small.url)
    assert (status, body) == (404, b"Not Found\n") and h["Cache-Control"] == "no-store"
    await revoke(api, small.file_id)


async def test_a_corrupt_record_is_404_not_an_error(res: Resources, stack: Stack) -> None:
    token = "C" * 22
    # Bad JSON, a compact record cut short, and one with an unknown type code.
    for raw in (b"{not json", b"\x01" + b"\x00" * 30, b"\x01\x0f" + b"\x00" * 60):
        await res.redis.set(token_cache.key(token), raw, ex=60)
        status, _, body = await get(f"{stack.edge_url}/{token}/file_x.png")
        assert (status, body) == (404, b"Not Found\n")


async def test_every_dead_url_gets_byte_identical_404s(
    api: aiohttp.ClientSession, stack: Stack, small: Public
) -> None:
    revoked = await share(api, png(SIZE))
    await revoke(api, revoked.file_id)
    deleted = await share(api, png(SIZE))
    async with api.delete(f"/v1/files/{deleted.file_id}") as r:
        assert r.status == 200
    name = small.url.rsplit("/", 1)[1]
    urls = [
        revoked.url,
        deleted.url,
        f"{stack.edge_url}/{'A' * 22}/{name}",  # unknown token
        f"{stack.edge_url}/{small.token}/{name}x",  # wrong name
        f"{stack.edge_url}/{small.token}",  # no name
        f"{stack.edge_url}/{'A' * 300}/{name}",  # absurd token
    ]
    answers = set()
    for url in urls:
        for method in ("GET", "HEAD"):
            status, h, body = await get(url, method)
            headers = tuple(sorted((k, v) for k, v in h.items() if k != "Date"))
            answers.add((method, status, headers, body))
    assert len(answers) == 2, answers  # one for GET, one for HEAD
    assert {a[1] for a in answers} == {404}


def test_the_edge_never_imports_the_database_layer() -> None:
    code = (
        "import sys; import cli.main, cdn_edge.supervisor, cdn_edge.process, cdn_edge.handler;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'asyncpg'"
        " or m in ('shared.db', 'shared.resources', 'shared.files', 'shared.public_urls')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
