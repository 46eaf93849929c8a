"""The public-URL rules of files-api.md, one test per rule, through REST and the edge."""

from __future__ import annotations

import re
import time

import aiohttp

from shared.resources import Resources
from tests.conftest import Stack, TeamKey, new_team
from tests.helpers import (
    call,
    create,
    fetch,
    jpeg,
    mp4,
    pdf,
    png,
    revoke,
    snapshot,
    until_past,
    upload,
)

MISSING = "file_00000000-0000-4000-8000-000000000000"


async def test_created_url_serves_the_file_at_once(
    api: aiohttp.ClientSession, stack: Stack
) -> None:
    data = png(3000)
    f = await upload(api, data)
    status, body = await create(api, f["id"], {})
    assert status == 200 and set(body) == {"public_url"}  # indefinite: no expires_at key
    m = re.fullmatch(
        re.escape(stack.edge_url) + r"/([A-Za-z0-9_-]{22})/(file_[0-9a-f-]{36})\.png",
        body["public_url"],
    )
    assert m and m.group(2) == f["id"]
    assert await fetch(body["public_url"]) == (200, data)


async def test_url_extension_follows_the_sniffed_type(api: aiohttp.ClientSession) -> None:
    for make, ext in ((png, "png"), (jpeg, "jpg"), (mp4, "mp4"), (pdf, "pdf")):
        f = await upload(api, make(), "whatever.bin")
        _, body = await create(api, f["id"], {})
        assert body["public_url"].endswith(f"/{f['id']}.{ext}")


async def test_one_url_per_file_repeat_create_returns_it(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png())
    first = await create(api, f["id"], {})
    assert await create(api, f["id"], {}) == first
    assert await create(api, f["id"]) == first  # no body at all counts as {}
    assert (
        await create(api, f["id"], data=b"", headers={"Content-Type": "application/json"}) == first
    )


async def test_new_expires_after_updates_expiry_in_place(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png())
    _, day = await create(api, f["id"], {"expires_after": 86400})
    _, week = await create(api, f["id"], {"expires_after": 7 * 86400})
    _, hour = await create(api, f["id"], {"expires_after": 3600})
    assert day["public_url"] == week["public_url"] == hour["public_url"]
    assert hour["expires_at"] < day["expires_at"] < week["expires_at"]
    now = time.time()
    assert abs(week["expires_at"] - (now + 7 * 86400)) < 5


async def test_omitting_expires_after_keeps_the_existing_expiry(
    api: aiohttp.ClientSession, res: Resources
) -> None:
    f = await upload(api, png())
    _, first = await create(api, f["id"], {"expires_after": 7200})
    # From here on, a deadline computed again from now would be a second later.
    await until_past(res, first["expires_at"] - 7200 + 1)
    _, again = await create(api, f["id"], {})
    assert again == first


async def test_after_revoke_a_new_token_and_the_old_url_stays_dead(
    api: aiohttp.ClientSession,
) -> None:
    f = await upload(api, png())
    _, old = await create(api, f["id"], {})
    assert (await fetch(old["public_url"]))[0] == 200
    assert (await revoke(api, f["id"]))[1]["revoked"] is True
    _, new = await create(api, f["id"], {})
    assert new["public_url"] != old["public_url"]
    assert (await fetch(new["public_url"]))[0] == 200
    assert (await fetch(old["public_url"]))[0] == 404


async def test_expires_after_outside_the_range_is_rejected(
    api: aiohttp.ClientSession, stack: Stack, res: Resources, team: TeamKey
) -> None:
    f = await upload(api, png())
    before = await snapshot(res, team.team)
    for bad in (0, -1, stack.settings.expires_after_max + 1):
        status, body = await create(api, f["id"], {"expires_after": bad})
        assert status == 400 and "expires_after" in body["error"], bad
    for bad in ("3600", 3600.5, True, [1]):
        status, body = await create(api, f["id"], {"expires_after": bad})
        assert status == 400, bad
    for raw in (b"{nope", b"[]", b'"x"'):
        status, _ = await create(
            api, f["id"], data=raw, headers={"Content-Type": "application/json"}
        )
        assert status == 400, raw
    assert await snapshot(res, team.team) == before
    assert (await call(api, "GET", f"/v1/files/{f['id']}"))[1]["public_url"] is None


async def test_the_default_limits_reject_3599_and_2592001(stack: Stack, res: Resources) -> None:
    """With the contract's defaults (the suite lowers the minimum), through a real REST app."""
    import dataclasses

    from aiohttp.test_utils import TestServer

    from api.app import build_app
    from shared.settings import Settings

    env = {k: v for k, v in stack.env.items() if k != "EXPIRES_AFTER_MIN"}
    defaults = Settings.from_env(env)
    assert (defaults.expires_after_min, defaults.expires_after_max) == (3600, 2592000)
    server = TestServer(build_app(dataclasses.replace(res, settings=defaults)))
    await server.start_server()
    tk = await new_team(res)
    try:
        async with aiohttp.ClientSession(
            base_url=str(server.make_url("/")), headers={"Authorization": f"Bearer {tk.key}"}
        ) as s:
            for bad in ("3599", "2592001"):
                status, body = await call(
                    s, "POST", "/v1/files", data=_form(png(), {"expires_after": bad})
                )
                assert status == 400 and "3600 and 2592000" in body["error"]
            f = await upload(s, png())
            for bad in (3599, 2592001):
                status, body = await create(s, f["id"], {"expires_after": bad})
                assert status == 400 and "3600 and 2592000" in body["error"]
            for good in (3600, 2592000):
                assert (await create(s, f["id"], {"expires_after": good}))[0] == 200
    finally:
        await server.close()


def _form(data: bytes, before: dict[str, str]) -> aiohttp.FormData:
    from tests.helpers import form

    return form(data, before=before)


async def test_omitted_expiry_inherits_the_files_deadline(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png(), before={"expires_after": "7200"})
    _, body = await create(api, f["id"], {})
    assert body["expires_at"] == f["expires_at"]
    _, got = await call(api, "GET", f"/v1/files/{f['id']}")
    assert got["public_url"] == body["public_url"]
    assert got["public_url_expires_at"] == f["expires_at"]


async def test_a_url_never_outlives_its_file(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png(), before={"expires_after": "7200"})
    status, body = await create(api, f["id"], {"expires_after": 7300})
    assert status == 400 and "outlive" in body["error"]
    status, body = await create(api, f["id"], {"expires_after": 7000})
    assert status == 200 and body["expires_at"] <= f["expires_at"]


async def test_only_png_jpeg_mp4_and_pdf_by_content_are_eligible(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    text = await upload(api, b"hello", "x.txt", content_type="text/plain")
    disguised = await upload(api, b"not an image at all", "photo.png", content_type="image/png")
    before = await snapshot(res, team.team)
    for f in (text, disguised):
        status, body = await create(api, f["id"], {})
        assert status == 400 and "PNG, JPEG, MP4 and PDF" in body["error"]
    assert await snapshot(res, team.team) == before


async def test_an_empty_file_cannot_be_made_public(api: aiohttp.ClientSession) -> None:
    f = await upload(api, b"", "empty.png")
    status, body = await create(api, f["id"], {})
    assert status == 400 and "empty" in body["error"]


async def test_files_over_the_public_size_limit_stay_private(
    api: aiohttp.ClientSession, stack: Stack
) -> None:
    limit = stack.settings.public_url_max_bytes
    assert limit < stack.settings.max_upload_bytes, "the suite lowers the public limit"
    f = await upload(api, png(limit + 1))
    status, body = await create(api, f["id"], {})
    assert status == 400 and str(limit) in body["error"]
    assert (await create(api, (await upload(api, png(limit)))["id"], {}))[0] == 200


async def test_unknown_file_is_404(api: aiohttp.ClientSession) -> None:
    status, body = await create(api, MISSING, {})
    assert status == 404 and body["code"] == "Some requested entity was not found"


async def test_revoke_is_idempotent(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png())
    assert await revoke(api, f["id"]) == (200, {"id": f["id"], "revoked": False})
    _, made = await create(api, f["id"], {})
    assert await revoke(api, f["id"]) == (
        200,
        {"id": f["id"], "revoked": True, "public_url": made["public_url"]},
    )
    assert await revoke(api, f["id"]) == (200, {"id": f["id"], "revoked": False})
    await call(api, "DELETE", f"/v1/files/{f['id']}")
    assert await revoke(api, f["id"]) == (200, {"id": f["id"], "revoked": False})
    assert await revoke(api, MISSING) == (200, {"id": MISSING, "revoked": False})


async def test_revoking_another_teams_url_does_nothing(
    api: aiohttp.ClientSession, stack: Stack, res: Resources
) -> None:
    f = await upload(api, png())
    _, made = await create(api, f["id"], {})
    other = await new_team(res)
    async with aiohttp.ClientSession(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {other.key}"}
    ) as s:
        assert await revoke(s, f["id"]) == (200, {"id": f["id"], "revoked": False})
    assert (await fetch(made["public_url"]))[0] == 200


async def test_revoking_never_deletes_the_file(api: aiohttp.ClientSession) -> None:
    data = png()
    f = await upload(api, data)
    await create(api, f["id"], {})
    await revoke(api, f["id"])
    assert await call(api, "GET", f"/v1/files/{f['id']}/content") == (200, data)


async def test_get_and_list_show_the_current_url(api: aiohttp.ClientSession) -> None:
    shared_file = await upload(api, png())
    private = await upload(api, png())
    _, made = await create(api, shared_file["id"], {"expires_after": 3600})
    _, got = await call(api, "GET", f"/v1/files/{shared_file['id']}")
    assert got["public_url"] == made["public_url"]
    assert got["public_url_expires_at"] == made["expires_at"]
    _, listed = await call(api, "GET", "/v1/files?filter=public_url%20!%3D%20null")
    assert [x["id"] for x in listed["data"]] == [shared_file["id"]]
    _, listed = await call(api, "GET", "/v1/files?filter=public_url+%3D+null")
    assert [x["id"] for x in listed["data"]] == [private["id"]]
    _, listed = await call(api, "GET", "/v1/files?filter=public_url_expires_at+%3E+0")
    assert [x["id"] for x in listed["data"]] == [shared_file["id"]]
    await revoke(api, shared_file["id"])
    _, got = await call(api, "GET", f"/v1/files/{shared_file['id']}")
    assert got["public_url"] is None and got["public_url_expires_at"] is None


async def test_deleting_the_file_kills_its_url(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png())
    _, made = await create(api, f["id"], {})
    await call(api, "DELETE", f"/v1/files/{f['id']}")
    assert (await fetch(made["public_url"]))[0] == 404


async def test_edge_404_is_the_same_for_every_dead_url(
    api: aiohttp.ClientSession, stack: Stack
) -> None:
    f = await upload(api, png())
    _, made = await create(api, f["id"], {})
    token = made["public_url"].split("/")[-2]
    await revoke(api, f["id"])
    g = await upload(api, png())
    _, live = await create(api, g["id"], {})
    live_token = live["public_url"].split("/")[-2]
    urls = [
        made["public_url"],  # revoked
        f"{stack.edge_url}/{'A' * 22}/{f['id']}.png",  # unknown token
        f"{stack.edge_url}/{live_token}/{f['id']}.png",  # another file's name
        f"{stack.edge_url}/{live_token}/{g['id']}.jpg",  # wrong extension
        f"{stack.edge_url}/{token}/x",
    ]
    answers = set()
    async with aiohttp.ClientSession() as s:
        for url in urls:
            async with s.get(url) as r:
                answers.add((r.status, await r.read(), r.headers.get("Content-Type")))
    assert len(answers) == 1 and next(iter(answers))[0] == 404


async def test_token_carries_128_random_bits(api: aiohttp.ClientSession) -> None:
    tokens = set()
    for _ in range(20):
        f = await upload(api, png())
        tokens.add((await create(api, f["id"], {}))[1]["public_url"].split("/")[-2])
    assert len(tokens) == 20
    assert all(len(t) == 22 and re.fullmatch(r"[A-Za-z0-9_-]+", t) for t in tokens)


async def test_create_writes_the_cache_entry_and_schedules_expiry(
    api: aiohttp.ClientSession, res: Resources
) -> None:
    from shared import scheduling, token_cache

    f = await upload(api, png())
    _, made = await create(api, f["id"], {"expires_after": 3600})
    token = made["public_url"].split("/")[-2]
    ttl_ms = await res.redis.pttl(token_cache.key(token))
    assert 3590_000 < ttl_ms <= 3600_000
    url_id, version = await res.db.fetchrow(
        "SELECT id, version FROM public_urls WHERE token = $1", token
    )
    job_key = f"arq:job:{scheduling.url_job_id(url_id, version)}"
    assert await res.redis.exists(job_key)
    await create(api, f["id"], {"expires_after": 7200})  # update: a new version, a new job
    assert await res.redis.exists(f"arq:job:{scheduling.url_job_id(url_id, version + 1)}")


async def test_changes_are_counted_in_per_minute_buckets(
    api: aiohttp.ClientSession, res: Resources
) -> None:
    from shared import metrics

    async def totals() -> dict[str, int]:
        out: dict[str, int] = {}
        for bucket in (await metrics.read(res.redis, minutes=3)).values():
            for k, v in bucket.items():
                out[k] = out.get(k, 0) + v
        return out

    before = await totals()
    f = await upload(api, png())
    await create(api, f["id"], {})
    await create(api, f["id"], {"expires_after": 3600})
    await revoke(api, f["id"])
    await call(api, "DELETE", f"/v1/files/{f['id']}")
    after = await totals()
    for name in ("files.uploaded", "url.created", "url.updated", "url.revoked", "files.deleted"):
        assert after.get(name, 0) - before.get(name, 0) == 1, name
    keys = [k async for k in res.redis.scan_iter(match=metrics.BUCKET_PREFIX + "*")]
    ttls = [await res.redis.ttl(k) for k in keys]
    assert keys and all(0 < t <= res.settings.metrics_retention_seconds for t in ttls)
