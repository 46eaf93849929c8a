"""`filecdn files history`, `files stats` and `files ls --shared`'s hits, run as a script
and as a person would, against the real stack."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from shared.link_stats import LinkCount, add_to_pipeline
from shared.resources import Resources
from tests.helpers import Cli, create, one_line_error, png, share, upload
from worker.link_stats_fold import Folder

MISSING = "file_00000000-0000-4000-8000-000000000000"


async def test_history_lists_a_files_changes_newest_first(
    cli: Cli, api: aiohttp.ClientSession
) -> None:
    f = await upload(api, png())
    await create(api, f["id"], {"expires_after": 3600})
    await create(api, f["id"], {"expires_after": 7200})
    events = await asyncio.to_thread(cli.json, "history", f["id"])
    assert [e["kind"] for e in events] == ["url.updated", "url.created", "file.uploaded"]
    assert [
        e["kind"] for e in await asyncio.to_thread(cli.json, "history", f["id"], "--limit", "1")
    ] == ["url.updated"]
    done = await asyncio.to_thread(cli, "history", f["id"])
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["when", "event", "actor", "token", "old", "expiry", "new", "expiry"]
    assert [r.split()[2] for r in rows] == ["url.updated", "url.created", "file.uploaded"]
    assert f"(key {events[0]['actor']['key_id']})" in rows[0]
    assert f"{events[0]['token_prefix']}…" in rows[0]


async def test_history_of_an_unknown_file_is_empty_and_a_bad_id_is_refused(cli: Cli) -> None:
    assert await asyncio.to_thread(cli.json, "history", MISSING) == []
    done = await asyncio.to_thread(cli, "history", MISSING)
    assert done.returncode == 0 and done.stderr == f"no history for {MISSING}\n"
    assert "malformed file id" in one_line_error(await asyncio.to_thread(cli, "history", "nope"))


async def test_stats_shows_hits_bytes_and_last_access(
    cli: Cli, api: aiohttp.ClientSession, res: Resources
) -> None:
    u = await share(api, png())
    now_ms = int(time.time() * 1000)
    pipe = res.redis.pipeline(transaction=False)
    add_to_pipeline(pipe, {u.token: LinkCount(7, 7_000_000)}, now_ms)
    await pipe.execute()
    await Folder(res).fold_pass()
    got = await asyncio.to_thread(cli.json, "stats", u.file_id)
    assert (got["public_url"], got["hits"], got["bytes_sent"]) == (u.url, 7, 7_000_000)
    assert got["last_accessed_at"] == now_ms // 1000
    done = await asyncio.to_thread(cli, "stats", u.file_id)
    lines = {line.split("  ")[0].strip(): line for line in done.stdout.splitlines()}
    assert u.url in lines["public url"] and "never" in lines["expires"]
    assert lines["hits"].split()[-1] == "7"
    assert "7.0 MB (7000000 bytes)" in lines["bytes sent"]

    plain = await upload(api, png())
    assert one_line_error(await asyncio.to_thread(cli, "stats", plain["id"])) == (
        f"file {plain['id']} has no public URL"
    )


async def test_ls_shared_has_a_hits_column(
    cli: Cli, api: aiohttp.ClientSession, res: Resources
) -> None:
    busy, idle = await share(api, png(), "[red]busy[/red].png"), await share(api, png())
    await upload(api, png())  # not shared: not listed
    pipe = res.redis.pipeline(transaction=False)
    add_to_pipeline(pipe, {busy.token: LinkCount(42, 1)}, int(time.time() * 1000))
    await pipe.execute()
    await Folder(res).fold_pass()
    listed = await asyncio.to_thread(cli.json, "ls", "--shared")
    assert {f["id"]: f["public_url_hits"] for f in listed} == {busy.file_id: 42, idle.file_id: 0}
    done = await asyncio.to_thread(cli, "ls", "--shared")
    header, *rows = done.stdout.splitlines()
    assert header.split()[-1] == "hits"
    assert "[red]busy[/red].png" in done.stdout  # a name is text, never markup
    assert {r.split()[0]: r.split()[-1] for r in rows} == {busy.file_id: "42", idle.file_id: "0"}
    # Without --shared the list is the API's, untouched.
    assert "hits" not in (await asyncio.to_thread(cli, "ls")).stdout.splitlines()[0]
