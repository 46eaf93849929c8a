"""Upload: streamed to S3, sniffed, hashed, bounded; bad input changes nothing."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import aiohttp

from shared import files, public_urls, teams
from shared.resources import Resources
from tests.conftest import Stack, TeamKey
from tests.helpers import (
    SEED_PNG,
    call,
    form,
    pending_multipart_uploads,
    png,
    snapshot,
    start_raw_upload,
    team_rows,
    upload,
    wait_for,
    wait_for_log,
)


async def test_upload_returns_the_file_object(api: aiohttp.ClientSession) -> None:
    before = int(time.time())
    f = await upload(api, png(5000), "cat.png", before={"purpose": "assistants"})
    assert f["id"].startswith("file_") and len(f["id"]) == 41
    assert f["object"] == "file" and f["status"] == "processed"
    assert f["bytes"] == 5000 and f["filename"] == "cat.png" and f["purpose"] == "assistants"
    assert before - 1 <= f["created_at"] <= time.time() + 1
    assert f["expires_at"] is None and f["public_url"] is None


async def test_upload_stores_exactly_the_bytes_sent(
    api: aiohttp.ClientSession, res: Resources
) -> None:
    data = os.urandom(7 * 1024 * 1024 + 123)  # more than one multipart part
    f = await upload(api, data, "blob.bin")
    status, body = await call(api, "GET", f"/v1/files/{f['id']}/content")
    assert status == 200 and body == data
    row = await res.db.fetchrow("SELECT sha256, object_key FROM files WHERE id = $1", f["id"])
    assert bytes(row["sha256"]) == hashlib.sha256(data).digest()
    assert (await res.storage.stat(row["object_key"])).size == len(data)  # type: ignore[union-attr]


async def test_purpose_defaults_to_empty(api: aiohttp.ClientSession) -> None:
    assert (await upload(api, png()))["purpose"] == ""


async def test_type_is_sniffed_from_content_not_name(
    api: aiohttp.ClientSession, res: Resources
) -> None:
    seed = await upload(api, SEED_PNG, "seed.bin", content_type="text/plain")
    fake = await upload(api, b"just text", "fake.png", content_type="image/png")
    types = dict(
        await res.db.fetch(
            "SELECT id, sniffed_type FROM files WHERE id = ANY($1)", [seed["id"], fake["id"]]
        )
    )
    assert types[seed["id"]] == "image/png"
    assert types[fake["id"]] is None


async def test_expires_after_sets_the_deadline(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png(), before={"expires_after": "7200"})
    assert abs(f["expires_at"] - (f["created_at"] + 7200)) <= 1


async def test_expires_after_may_follow_the_file_part(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png(), after={"expires_after": "7200"})
    assert abs(f["expires_at"] - (f["created_at"] + 7200)) <= 1


async def test_openai_expires_after_form_is_accepted(api: aiohttp.ClientSession) -> None:
    f = await upload(
        api,
        png(),
        before={
            "purpose": "assistants",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "3600",
        },
    )
    assert abs(f["expires_at"] - (f["created_at"] + 3600)) <= 1


async def test_empty_file_uploads(api: aiohttp.ClientSession) -> None:
    f = await upload(api, b"", "empty.txt")
    assert f["bytes"] == 0
    assert (await call(api, "GET", f"/v1/files/{f['id']}/content")) == (200, b"")


# --- bad input: a clear JSON error, and nothing left behind ------------------------------


async def _rejected(
    api: aiohttp.ClientSession,
    res: Resources,
    team: TeamKey,
    status: int,
    data: aiohttp.FormData | bytes,
    **kw: object,
) -> str:
    before = await snapshot(res, team.team)
    got, body = await call(api, "POST", "/v1/files", data=data, **kw)
    assert got == status, body
    assert set(body) == {"code", "error"} and body["error"]
    assert await snapshot(res, team.team) == before
    return str(body["error"])


async def test_missing_file_part_is_rejected(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    fd = aiohttp.FormData()
    fd.add_field("purpose", "assistants")
    fd.add_field("other", "x")
    assert "file" in await _rejected(api, res, team, 400, fd)


async def test_non_multipart_body_is_rejected(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    await _rejected(api, res, team, 400, b"raw bytes", headers={"Content-Type": "image/png"})


async def test_file_over_the_size_limit_is_413_and_leaves_nothing(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey, stack: Stack
) -> None:
    too_big = os.urandom(stack.settings.max_upload_bytes + 1)
    msg = await _rejected(api, res, team, 413, form(too_big, "big.bin"))
    assert "maximum upload size" in msg


async def test_expires_after_out_of_range_is_rejected(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey, stack: Stack
) -> None:
    too_long = str(stack.settings.expires_after_max + 1)
    for where in ("before", "after"):
        for value in (too_long, "-5", "0"):
            msg = await _rejected(
                api, res, team, 400, form(png(), **{where: {"expires_after": value}})
            )
            assert "expires_after" in msg


async def test_expires_after_not_a_number_is_rejected(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    for value in ("soon", "1.5", "1e4"):
        await _rejected(api, res, team, 400, form(png(), before={"expires_after": value}))


async def test_both_expiry_forms_or_a_bad_anchor_are_rejected(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    both = {
        "expires_after": "3600",
        "expires_after[anchor]": "created_at",
        "expires_after[seconds]": "3600",
    }
    await _rejected(api, res, team, 400, form(png(), before=both))
    bad_anchor = {"expires_after[anchor]": "last_used", "expires_after[seconds]": "3600"}
    await _rejected(api, res, team, 400, form(png(), before=bad_anchor))
    no_seconds = {"expires_after[anchor]": "created_at"}
    await _rejected(api, res, team, 400, form(png(), after=no_seconds))


async def test_two_file_parts_are_rejected(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    fd = form(png(), "a.png")
    fd.add_field("file", png(), filename="b.png")
    await _rejected(api, res, team, 400, fd)


async def test_client_disconnecting_mid_upload_leaves_nothing(
    stack: Stack, res: Resources, team: TeamKey
) -> None:
    """A client that sends 6 MiB (so a multipart upload is open) then vanishes."""
    before = await snapshot(res, team.team)
    request_id = uuid.uuid4().hex
    writer = await start_raw_upload(stack, team.key, request_id, 50 * 1024 * 1024)
    for _ in range(6):
        writer.write(os.urandom(1024 * 1024))
        await writer.drain()

    async def part_stored() -> bool:
        return await pending_multipart_uploads(res) > before[2]

    await wait_for(part_stored, what="the API to open the multipart upload and send a part")
    writer.transport.abort()
    started = await wait_for_log(stack, "api", event="upload started", request_id=request_id)
    await wait_for_log(stack, "api", event="upload aborted", file_id=started["file_id"])
    assert await snapshot(res, team.team) == before


async def test_a_commit_the_client_never_heard_of_is_retracted_without_a_trace(
    res: Resources, team: TeamKey
) -> None:
    # What gRPC's UploadFile does when the client cancels while the commit runs.
    caller = await teams.authenticate(res.db, team.key)
    before = await snapshot(res, team.team)
    up = files.Upload(res, caller, "late.png")
    await up.write(png(3000))
    stored = await up.commit()
    assert await team_rows(res, team.team) == before[0] + 1
    await up.retract()
    assert await snapshot(res, team.team) == before
    assert (
        await res.db.fetchval("SELECT count(*) FROM audit_events WHERE file_id = $1", stored.id)
        == 0
    )


async def test_a_retraction_keeps_a_file_that_got_a_url_meanwhile(
    res: Resources, team: TeamKey
) -> None:
    caller = await teams.authenticate(res.db, team.key)
    up = files.Upload(res, caller, "shared.png")
    await up.write(png(3000))
    stored = await up.commit()
    await public_urls.create(res, caller, stored.id, None)
    await up.retract()
    assert (await files.get_file(res, team.team, stored.id)).url_token is not None
