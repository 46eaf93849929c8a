"""Listing: order, sort, filter language, opaque cursors, openai-style `after`."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import pytest

from shared.resources import Resources
from tests.conftest import TeamKey
from tests.helpers import call, jpeg, pdf, png, snapshot, upload


async def _ids(api: aiohttp.ClientSession, query: str = "") -> list[str]:
    status, body = await call(api, "GET", f"/v1/files{query}")
    assert status == 200, body
    return [f["id"] for f in body["data"]]


async def _walk(
    api: aiohttp.ClientSession, params: str, limit: int, cursor: str = "pagination_token"
) -> list[str]:
    """Every id, page by page, following the server's cursor (or openai's `after`)."""
    seen: list[str] = []
    token = None
    for _ in range(100):
        q = f"?limit={limit}{params}"
        if token:
            q += f"&{cursor}={quote(token)}"
        _, page = await call(api, "GET", f"/v1/files{q}")
        seen += [f["id"] for f in page["data"]]
        if not page["data"]:
            assert page["pagination_token"] is None and page["has_more"] is False
            return seen
        assert page["pagination_token"]  # a token with every non-empty page
        token = page["pagination_token"] if cursor == "pagination_token" else page["last_id"]
    raise AssertionError("pagination did not end")


@pytest.fixture
async def seven(api: aiohttp.ClientSession) -> list[dict[str, Any]]:
    """Seven files uploaded in order, of different names, sizes and types."""
    made = []
    for i, (make, name) in enumerate(
        [
            (png, "b.png"),
            (jpeg, "a.jpg"),
            (pdf, "report-q1.pdf"),
            (png, "e.png"),
            (pdf, "Quarterly REPORT.pdf"),
            (jpeg, "c.jpg"),
            (png, "d.png"),
        ]
    ):
        made.append(await upload(api, make(1000 + 100 * i), name))
    return made


async def test_default_is_newest_first(
    api: aiohttp.ClientSession, seven: list[dict[str, Any]]
) -> None:
    assert await _ids(api) == [f["id"] for f in reversed(seven)]
    assert await _ids(api, "?order=asc") == [f["id"] for f in seven]


async def test_sort_by_filename_and_size(
    api: aiohttp.ClientSession, seven: list[dict[str, Any]]
) -> None:
    by_size = sorted(seven, key=lambda f: f["bytes"])
    assert await _ids(api, "?sort_by=size&order=asc") == [f["id"] for f in by_size]
    names = await call(api, "GET", "/v1/files?sort_by=filename&order=asc")
    got = [f["filename"] for f in names[1]["data"]]
    assert got == sorted(got) and len(got) == 7


async def test_pagination_walks_every_file_once(
    api: aiohttp.ClientSession, seven: list[dict[str, Any]]
) -> None:
    everything = [f["id"] for f in reversed(seven)]
    assert await _walk(api, "", 3) == everything
    assert await _walk(api, "&sort_by=size&order=asc", 2) == [
        f["id"] for f in sorted(seven, key=lambda f: f["bytes"])
    ]
    assert await _walk(api, "", 3, cursor="after") == everything  # the openai SDK's way


async def test_has_more_is_exact(api: aiohttp.ClientSession, seven: list[dict[str, Any]]) -> None:
    _, page = await call(api, "GET", "/v1/files?limit=7")
    assert len(page["data"]) == 7 and page["has_more"] is False
    _, page = await call(api, "GET", "/v1/files?limit=6")
    assert page["has_more"] is True


async def test_bare_file_id_works_as_a_token(
    api: aiohttp.ClientSession, seven: list[dict[str, Any]]
) -> None:
    newest_first = [f["id"] for f in reversed(seven)]
    assert await _ids(api, f"?pagination_token={newest_first[2]}") == newest_first[3:]


async def test_filters_select_files(
    api: aiohttp.ClientSession, seven: list[dict[str, Any]]
) -> None:
    ids = {f["filename"]: f["id"] for f in seven}

    async def names(flt: str, encode: Any = quote) -> set[str]:
        got = await _ids(api, f"?filter={encode(flt)}")
        return {n for n, i in ids.items() if i in got}

    assert await names('name:"report"') == {"report-q1.pdf", "Quarterly REPORT.pdf"}
    assert await names('content_type = "image/png"') == {"b.png", "e.png", "d.png"}
    assert await names('content_type:"pdf" AND size_bytes > 1300') == {"Quarterly REPORT.pdf"}
    # OR binds tighter than AND (AIP-160): (>= 1500 OR < 1100) AND name has "png".
    expected = {"b.png", "d.png"}
    assert await names('size_bytes >= 1500 OR size_bytes < 1100 AND name:"png"') == expected
    assert await names('NOT content_type:"image"') == {"report-q1.pdf", "Quarterly REPORT.pdf"}
    assert await names(f'file_id = "{ids["c.jpg"]}"') == {"c.jpg"}
    assert await names("public_url != null") == set()
    assert await names("expires_at = null") == set(ids)
    # The openai SDK (httpx) encodes spaces as '+'.
    assert await names('name = "a.jpg"', quote_plus) == {"a.jpg"}
    created = seven[3]["created_at"]
    after = await names(f'created_at > "{_rfc3339(created - 3600)}"')
    assert after == set(ids)


def _rfc3339(ts: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_purpose_narrows_the_list(api: aiohttp.ClientSession) -> None:
    a = await upload(api, png(), before={"purpose": "assistants"})
    await upload(api, png(), before={"purpose": "batch"})
    assert await _ids(api, "?purpose=assistants") == [a["id"]]


# --- bad input ---------------------------------------------------------------------------


async def _bad(api: aiohttp.ClientSession, res: Resources, team: TeamKey, query: str) -> str:
    before = await snapshot(res, team.team)
    status, body = await call(api, "GET", f"/v1/files{query}")
    assert status == 400, (query, body)
    assert set(body) == {"code", "error"}
    assert await snapshot(res, team.team) == before
    return str(body["error"])


async def test_bad_filters_say_where_they_failed(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    assert "colour" in await _bad(api, res, team, "?filter=" + quote('colour = "red"'))
    assert "position" in await _bad(api, res, team, "?filter=" + quote("size_bytes > "))
    assert "position" in await _bad(api, res, team, "?filter=" + quote('(name = "a"'))
    await _bad(api, res, team, "?filter=" + quote('size_bytes > "big"'))


async def test_bad_pagination_tokens_are_rejected(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey, seven: list[dict[str, Any]]
) -> None:
    _, page = await call(api, "GET", "/v1/files?limit=2")
    token = page["pagination_token"]
    assert "not a token" in await _bad(api, res, team, "?pagination_token=garbage")
    _body, sig = token.split(".")
    forged = base64.urlsafe_b64encode(b'["0","s","zzz","file_x"]').decode().rstrip("=")
    await _bad(api, res, team, f"?pagination_token={forged}.{sig}")
    # A genuine token cannot be reused with another query.
    msg = await _bad(api, res, team, f"?pagination_token={token}&sort_by=size")
    assert "different query" in msg
    await _bad(api, res, team, "?after=not-a-file-id")
    await _bad(api, res, team, "?after=file_00000000-0000-4000-8000-000000000000")


async def test_limit_bounds(api: aiohttp.ClientSession, res: Resources, team: TeamKey) -> None:
    assert "limit" in await _bad(api, res, team, "?limit=0")
    await _bad(api, res, team, "?limit=-1")
    await _bad(api, res, team, "?limit=ten")
    await _bad(api, res, team, "?order=sideways")
    await _bad(api, res, team, "?sort_by=colour")
    # Larger values are clamped to 100 (the contract), not refused.
    status, body = await call(api, "GET", "/v1/files?limit=10000")
    assert status == 200 and body["data"] == []


async def test_listing_uses_an_index_at_100k_files(res: Resources, team: TeamKey) -> None:
    """The list query for a team with 100k files walks an index instead of sorting a scan."""
    await res.db.execute(
        """INSERT INTO files (id, team_id, filename, bytes, content_type, sha256, object_key,
                              created_at)
           SELECT 'file_' || gen_random_uuid(), $1::bigint, 'f' || g || '.bin', g, 'application/x',
                  '\\x00', 'bench/' || $1::text || '/' || g, now() - g * interval '1 second'
             FROM generate_series(1, 100000) g""",
        team.team.id,
    )
    await res.db.execute("ANALYZE files")
    from shared import pagination
    from shared.files import list_files, list_sql
    from shared.pagination import ListQuery

    for sort_by in ("created_at", "filename", "size"):
        for order in ("asc", "desc"):
            q = ListQuery(limit=100, sort_by=sort_by, order=order)  # type: ignore[arg-type]
            page = await list_files(res, team.team, q)
            assert len(page.files) == 100 and page.has_more
            # The exact SQL the API runs, first page and a later one.
            last = page.files[-1]
            value = {"created_at": last.created_at, "filename": last.filename, "size": last.size}
            for cursor in (None, pagination.Cursor(value[sort_by], last.id)):
                sql, params = list_sql(team.team, q, 100, cursor)
                async with res.db.acquire() as conn:
                    plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *params))
                assert (
                    "Index" in plan and " Sort " not in plan and "Seq Scan on files" not in plan
                ), plan
    await res.db.execute("DELETE FROM files WHERE team_id = $1", team.team.id)
