"""The audit trail: every lifecycle change leaves one row, written with the change, naming
who made it; a team reads only its own rows, newest first, a page at a time."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from shared import teams
from shared.resources import Resources
from tests.conftest import Stack, TeamKey, WorkerHandle, new_team
from tests.helpers import (
    auth,
    call,
    create,
    form,
    png,
    revoke,
    until_past,
    upload,
    uploaded,
    wait_for,
)

MISSING = "file_00000000-0000-4000-8000-000000000000"


async def history(api: aiohttp.ClientSession, file_id: str | None = None, **q: Any) -> Any:
    params = {k: str(v) for k, v in q.items()}
    if file_id is not None:
        params["file_id"] = file_id
    status, body = await call(api, "GET", "/v1/audit-events", params=params)
    assert status == 200, body
    return body


async def kinds(api: aiohttp.ClientSession, file_id: str) -> list[str]:
    """The file's events, oldest first (the API answers newest first)."""
    return [e["kind"] for e in reversed((await history(api, file_id))["data"])]


def token_of(url: str) -> str:
    return url.rsplit("/", 2)[-2]


async def test_every_rest_change_is_one_row_naming_the_key_and_what_changed(
    stack: Stack, res: Resources, team: TeamKey
) -> None:
    key = await teams.create_key(res.db, team.team.name, name="release-bot")
    key_id = await res.db.fetchval("SELECT id FROM api_keys WHERE key_prefix = $1", key[:12])
    async with aiohttp.ClientSession(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}
    ) as api:
        f = await upload(api, png(), before={"expires_after": "86400"})
        _, first = await create(api, f["id"], {"expires_after": 3600})
        _, again = await create(api, f["id"], {})  # nothing changes: no row
        _, updated = await create(api, f["id"], {"expires_after": 7200})
        assert (await revoke(api, f["id"]))[1]["revoked"] is True
        assert (await revoke(api, f["id"]))[1]["revoked"] is False  # nothing to revoke: no row
        _, second = await create(api, f["id"], {})
        assert (await call(api, "DELETE", f"/v1/files/{f['id']}"))[0] == 200
        body = await history(api, f["id"])

    assert again["public_url"] == first["public_url"]
    events = list(reversed(body["data"]))
    assert [e["kind"] for e in events] == [
        "file.uploaded",
        "url.created",
        "url.updated",
        "url.revoked",
        "url.created",
        "url.revoked_with_file",
        "file.deleted",
    ]
    assert body["object"] == "list" and body["has_more"] is False
    assert (body["first_id"], body["last_id"]) == (events[-1]["id"], events[0]["id"])
    actor = {"kind": "api_key", "key_id": key_id, "name": "release-bot"}
    assert all(e["actor"] == actor for e in events)
    assert all(e["object"] == "audit_event" and e["file_id"] == f["id"] for e in events)
    assert all(isinstance(e["created_at"], int) for e in events)
    up, made, moved, revoked, remade, with_file, deleted = events
    t1, t2 = token_of(first["public_url"])[:4], token_of(second["public_url"])[:4]
    assert [e["token_prefix"] for e in events] == [None, t1, t1, t1, t2, t2, None]
    assert (up["old_expires_at"], up["new_expires_at"]) == (None, f["expires_at"])
    assert (made["old_expires_at"], made["new_expires_at"]) == (None, first["expires_at"])
    assert (moved["old_expires_at"], moved["new_expires_at"]) == (
        first["expires_at"],
        updated["expires_at"],
    )
    assert (revoked["old_expires_at"], revoked["new_expires_at"]) == (updated["expires_at"], None)
    # The second URL inherits the file's deadline.
    assert remade["new_expires_at"] == f["expires_at"] == with_file["old_expires_at"]
    assert (deleted["old_expires_at"], deleted["new_expires_at"]) == (f["expires_at"], None)


async def test_a_key_without_a_name_is_named_by_its_prefix(
    api: aiohttp.ClientSession, team: TeamKey
) -> None:
    f = await upload(api, png())
    [event] = (await history(api, f["id"]))["data"]
    assert event["actor"]["kind"] == "api_key"
    assert event["actor"]["name"] == team.key[:12]


async def test_grpc_changes_are_recorded_like_rest_ones(
    stub: Any, api: aiohttp.ClientSession, team: TeamKey
) -> None:
    from xai_sdk.proto import files_pb2

    f = await uploaded(stub, team)
    made = await stub.CreatePublicUrl(
        files_pb2.CreatePublicUrlRequest(file_id=f.id, expires_after=3600), metadata=auth(team)
    )
    await stub.CreatePublicUrl(
        files_pb2.CreatePublicUrlRequest(file_id=f.id, expires_after=7200), metadata=auth(team)
    )
    await stub.RevokePublicUrl(files_pb2.RevokePublicUrlRequest(file_id=f.id), metadata=auth(team))
    await stub.DeleteFile(files_pb2.DeleteFileRequest(file_id=f.id), metadata=auth(team))
    assert await kinds(api, f.id) == [
        "file.uploaded",
        "url.created",
        "url.updated",
        "url.revoked",
        "file.deleted",
    ]
    events = (await history(api, f.id))["data"]
    assert {e["actor"]["name"] for e in events} == {team.key[:12]}
    assert events[-2]["token_prefix"] == token_of(made.public_url)[:4]


async def test_a_refused_change_leaves_no_row(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    text = await upload(api, b"just text", "notes.txt")  # not shareable

    async def rows() -> int:
        return int(
            await res.db.fetchval(
                "SELECT count(*) FROM audit_events WHERE team_id = $1", team.team.id
            )
        )

    before = await rows()
    assert (await create(api, text["id"], {}))[0] == 400
    assert (await create(api, MISSING, {}))[0] == 404
    assert (await call(api, "DELETE", f"/v1/files/{MISSING}"))[0] == 404
    out_of_range = form(png(), before={"expires_after": "99999999"})
    assert (await call(api, "POST", "/v1/files", data=out_of_range))[0] == 400
    assert await rows() == before == 1


async def test_a_create_that_finds_its_url_past_the_deadline_records_the_expiry(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    """No worker running: the create retires the dead URL itself, and says so."""
    f = await upload(api, png())
    _, first = await create(api, f["id"], {"expires_after": 1})
    await until_past(res, first["expires_at"])
    _, second = await create(api, f["id"], {})
    assert second["public_url"] != first["public_url"]
    events = (await history(api, f["id"]))["data"]
    assert [e["kind"] for e in events] == [
        "url.created",
        "url.expired",
        "url.created",
        "file.uploaded",
    ]
    expired = events[1]
    assert expired["actor"]["name"] == team.key[:12]
    assert expired["token_prefix"] == token_of(first["public_url"])[:4]
    assert expired["old_expires_at"] == first["expires_at"]


async def test_the_worker_records_url_expiry_and_file_expiry_as_the_worker(
    api: aiohttp.ClientSession, res: Resources, worker: WorkerHandle
) -> None:
    shared = await upload(api, png())
    _, made = await create(api, shared["id"], {"expires_after": 1})
    short = await upload(api, png(), before={"expires_after": "1"})

    async def recorded() -> bool:
        return (await kinds(api, shared["id"]))[-1:] == ["url.expired"] and (
            await kinds(api, short["id"])
        )[-1:] == ["file.expired"]

    await wait_for(recorded, timeout=20, what="the worker's expiry rows")
    [url_expired] = [
        e for e in (await history(api, shared["id"]))["data"] if e["kind"] == "url.expired"
    ]
    [file_expired] = [
        e for e in (await history(api, short["id"]))["data"] if e["kind"] == "file.expired"
    ]
    worker_actor = {"kind": "worker", "key_id": None, "name": "worker"}
    assert url_expired["actor"] == file_expired["actor"] == worker_actor
    assert url_expired["old_expires_at"] == made["expires_at"]
    assert url_expired["token_prefix"] == token_of(made["public_url"])[:4]
    assert file_expired["old_expires_at"] == short["expires_at"]


async def test_deleting_a_shared_file_records_both_once_with_the_worker_running(
    api: aiohttp.ClientSession, res: Resources, worker: WorkerHandle
) -> None:
    f = await upload(api, png())
    _, made = await create(api, f["id"], {})
    assert (await call(api, "DELETE", f"/v1/files/{f['id']}"))[0] == 200

    async def object_gone() -> bool:
        return bool(
            await res.db.fetchval(
                "SELECT object_deleted_at IS NOT NULL FROM files WHERE id = $1", f["id"]
            )
        )

    await wait_for(object_gone, timeout=20, what="the worker to finish the deletion")
    # The worker's event handler found the URL already revoked: it adds no second row.
    assert await kinds(api, f["id"]) == [
        "file.uploaded",
        "url.created",
        "url.revoked_with_file",
        "file.deleted",
    ]
    with_file = (await history(api, f["id"]))["data"][1]
    assert with_file["token_prefix"] == token_of(made["public_url"])[:4]
    assert with_file["actor"]["kind"] == "api_key"


async def test_reconcile_retires_overdue_urls_as_the_worker(
    api: aiohttp.ClientSession, res: Resources
) -> None:
    """A URL whose job was lost is expired by reconcile's overdue pass, and recorded."""
    from worker.reconcile import Reconciler

    f = await upload(api, png())
    _, made = await create(api, f["id"], {"expires_after": 1})
    await until_past(res, made["expires_at"])
    await Reconciler(res).expire_overdue_urls()
    newest = (await history(api, f["id"]))["data"][0]
    assert (newest["kind"], newest["actor"]["kind"]) == ("url.expired", "worker")


async def test_another_teams_events_are_never_visible(
    api: aiohttp.ClientSession, stack: Stack, res: Resources
) -> None:
    mine = await upload(api, png())
    other = await new_team(res)
    async with aiohttp.ClientSession(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {other.key}"}
    ) as theirs:
        assert (await history(theirs))["data"] == []
        # Another team's file id answers exactly like an unknown one: an empty list.
        assert await history(theirs, mine["id"]) == await history(theirs, MISSING)
        assert (await history(theirs, mine["id"]))["data"] == []
        # A position taken from another team's ids shows nothing of theirs either.
        after = (await history(api))["data"][0]["id"] + 1
        assert (await history(theirs, after=after))["data"] == []
    assert [e["file_id"] for e in (await history(api))["data"]] == [mine["id"]]


async def test_events_page_newest_first_with_after_and_limit(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    f = await upload(api, png())
    for n in range(4):
        await create(api, f["id"], {"expires_after": 3600 + n})
    other = await upload(api, png())
    everything = (await history(api, limit=100))["data"]
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)
    assert len(everything) == 6

    seen: list[int] = []
    after: int | None = None
    while True:
        page = await history(api, f["id"], limit=2, **({"after": after} if after else {}))
        seen += [e["id"] for e in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == [e["id"] for e in everything if e["file_id"] == f["id"]]
    assert len(seen) == 5 and everything[0]["file_id"] == other["id"]


async def test_limit_is_clamped_like_the_file_list(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    f = await upload(api, png())
    await res.db.execute(
        """INSERT INTO audit_events (team_id, file_id, kind, actor_kind, actor_name)
           SELECT $1, $2, 'url.updated', 'worker', 'worker' FROM generate_series(1, 120)""",
        team.team.id,
        f["id"],
    )
    page = await history(api, limit=10_000)
    assert len(page["data"]) == 100 and page["has_more"] is True
    default = await history(api)
    assert default["data"] == page["data"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=-1",
        "limit=ten",
        "limit=",
        "after=abc",
        "after=0",
        "after=-5",
        "after=99999999999999999999",
        "file_id=nope",
        "file_id=file_123",
    ],
)
async def test_bad_input_is_a_json_400(api: aiohttp.ClientSession, query: str) -> None:
    status, body = await call(api, "GET", f"/v1/audit-events?{query}")
    assert status == 400, body
    assert body["code"] == "Client specified an invalid argument" and body["error"]


async def test_the_audit_endpoint_needs_a_key(anon: aiohttp.ClientSession) -> None:
    status, body = await call(anon, "GET", "/v1/audit-events")
    assert status == 401 and "error" in body


async def test_retention_sweeps_old_rows_in_batches_and_keeps_recent_ones(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import retention

    f = await upload(api, png())
    await res.db.execute(
        """INSERT INTO audit_events (team_id, file_id, kind, actor_kind, actor_name, created_at)
           SELECT $1, $2, 'url.updated', 'worker', 'worker', now() - interval '400 days'
             FROM generate_series(1, 25)""",
        team.team.id,
        f["id"],
    )
    monkeypatch.setattr(retention, "BATCH", 10)
    stats = await retention.sweep(res)
    assert stats["audit_events_deleted"] >= 25
    assert await kinds(api, f["id"]) == ["file.uploaded"]  # the recent row stays


async def test_the_worker_sweeps_at_start(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey, stack: Stack
) -> None:
    f = await upload(api, png())
    await res.db.execute(
        """INSERT INTO audit_events (team_id, file_id, kind, actor_kind, actor_name, created_at)
           VALUES ($1, $2, 'url.updated', 'worker', 'worker', now() - interval '3 days')""",
        team.team.id,
        f["id"],
    )
    handle = WorkerHandle(stack)
    handle.start(AUDIT_RETENTION_DAYS="2")
    try:

        async def swept() -> bool:
            return await kinds(api, f["id"]) == ["file.uploaded"]

        await wait_for(swept, timeout=20, what="the worker's retention sweep")
    finally:
        handle.stop()


async def test_admin_names_keys_and_lists_their_names(stack: Stack, res: Resources) -> None:
    team = await new_team(res)

    def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "admin", *args],
            capture_output=True,
            text=True,
            env={**stack.env, "COLUMNS": "200"},
            timeout=60,
        )

    made = await asyncio.to_thread(
        admin, "create-key", "--team", team.team.name, "--name", "[bold]ci[/bold]"
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    listed = await asyncio.to_thread(admin, "list-keys", "--team", team.team.name)
    assert "[bold]ci[/bold]" in listed.stdout  # shown as text, not as markup
    caller = await teams.authenticate(res.db, key)
    assert caller.actor.name == "[bold]ci[/bold]"
    refused = await asyncio.to_thread(admin, "create-key", "--team", team.team.name, "--name", " ")
    assert refused.returncode == 1 and "key name" in refused.stderr


async def test_listing_events_walks_an_index_at_100k_rows(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    """Both list queries (the team's, one file's) read an index in order, never sort a scan."""
    from shared import audit

    files = [await upload(api, png()) for _ in range(2)]
    await res.db.execute(
        """INSERT INTO audit_events (team_id, file_id, kind, actor_kind, actor_name)
           SELECT $1, CASE WHEN g % 100 = 0 THEN $2 ELSE $3 END, 'url.updated', 'worker', 'w'
             FROM generate_series(1, 100000) g""",
        team.team.id,
        files[0]["id"],
        files[1]["id"],
    )
    await res.db.execute("ANALYZE audit_events")
    cases = [
        (audit._BY_TEAM, [team.team.id, 2**63 - 1, 101]),
        (audit._BY_FILE, [team.team.id, 2**63 - 1, 101, files[0]["id"]]),
        (audit._BY_FILE, [team.team.id, 50_000, 101, files[0]["id"]]),
    ]
    for sql, args in cases:
        async with res.db.acquire() as conn:
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
        assert "Index" in plan and " Sort " not in plan and "Seq Scan" not in plan, plan
    page = await history(api, files[0]["id"], limit=5)
    assert len(page["data"]) == 5 and page["has_more"]


async def test_the_event_handler_records_a_url_it_revokes_with_its_file(
    api: aiohttp.ClientSession, res: Resources
) -> None:
    """Normally the delete revoked the URL already; if not (a row retired by hand, say), the
    worker's handler does, and records it as the worker."""
    from shared import events
    from worker import events as event_consumer

    f = await upload(api, png())
    _, made = await create(api, f["id"], {})
    key = await res.db.fetchval(
        "UPDATE files SET deleted_at = now() WHERE id = $1 RETURNING object_key", f["id"]
    )
    event = events.FileEvent(events.FILE_DELETED, f["id"], key, 0, "deleted")
    await event_consumer.handle(res, event)
    await event_consumer.handle(res, event)  # redelivered: nothing more
    newest, *_ = (await history(api, f["id"]))["data"]
    assert (newest["kind"], newest["actor"]["kind"]) == ("url.revoked_with_file", "worker")
    assert newest["token_prefix"] == token_of(made["public_url"])[:4]
    assert await kinds(api, f["id"]) == ["file.uploaded", "url.created", "url.revoked_with_file"]
