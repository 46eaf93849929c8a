"""Authentication by API key per team, and no existence leak across teams."""

from __future__ import annotations

import subprocess
import sys

import aiohttp

from shared.resources import Resources
from tests.conftest import Stack, TeamKey, new_team
from tests.helpers import call, png, snapshot, upload


async def test_missing_key_is_401_with_a_json_error(anon: aiohttp.ClientSession) -> None:
    status, body = await call(anon, "GET", "/v1/files")
    assert status == 401
    assert body["code"].startswith("The request does not have valid authentication")
    assert "Authorization: Bearer" in body["error"]


async def test_wrong_key_is_401(anon: aiohttp.ClientSession) -> None:
    for header in ("Bearer fcdn_nope", "Bearer ", "Basic abc", "fcdn_nope"):
        status, body = await call(anon, "GET", "/v1/files", headers={"Authorization": header})
        assert status == 401, header
        assert body["error"]


async def test_revoked_key_is_401(stack: Stack, res: Resources) -> None:
    from shared import teams

    tk = await new_team(res)
    async with aiohttp.ClientSession(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {tk.key}"}
    ) as s:
        assert (await call(s, "GET", "/v1/files"))[0] == 200
        await teams.revoke_key(res.db, tk.key)
        assert (await call(s, "GET", "/v1/files"))[0] == 401


async def test_another_teams_file_answers_like_a_missing_one(
    api: aiohttp.ClientSession, stack: Stack, res: Resources
) -> None:
    theirs = await upload(api, png())
    other = await new_team(res)
    missing = "file_00000000-0000-4000-8000-000000000000"
    async with aiohttp.ClientSession(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {other.key}"}
    ) as s:
        for method, suffix in (
            ("GET", ""),
            ("GET", "/content"),
            ("DELETE", ""),
            ("POST", "/public-url"),
        ):
            s1, b1 = await call(s, method, f"/v1/files/{theirs['id']}{suffix}")
            s2, b2 = await call(s, method, f"/v1/files/{missing}{suffix}")
            assert s1 == s2 == 404, (method, suffix)
            assert b1["error"].replace(theirs["id"], "X") == b2["error"].replace(missing, "X")
        _, listing = await call(s, "GET", "/v1/files")
        assert listing["data"] == []
    # And nothing happened to it.
    assert (await call(api, "GET", f"/v1/files/{theirs['id']}"))[0] == 200


async def test_unknown_and_malformed_ids_get_clear_errors(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    before = await snapshot(res, team.team)
    status, body = await call(api, "GET", "/v1/files/file_00000000-0000-4000-8000-000000000000")
    assert status == 404 and "not found" in body["error"]
    for bad in ("nope", "file_123", "file_../../etc"):
        status, body = await call(api, "GET", f"/v1/files/{bad}")
        assert status == 400 and "malformed file id" in body["error"], bad
        assert (await call(api, "DELETE", f"/v1/files/{bad}"))[0] == 400
    assert await snapshot(res, team.team) == before


def _filecdn(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_admin_cli_manages_teams_and_keys(stack: Stack) -> None:
    name = f"cli-team-{id(stack)}-{__import__('uuid').uuid4().hex[:6]}"
    assert _filecdn(stack, "admin", "create-team", name).returncode == 0
    dup = _filecdn(stack, "admin", "create-team", name)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    made = _filecdn(stack, "admin", "create-key", "--team", name)
    key = made.stdout.strip()
    assert made.returncode == 0 and key.startswith("fcdn_") and "\n" not in key  # only the key
    listed = _filecdn(stack, "admin", "list-keys", "--team", name)
    assert key[:12] in listed.stdout and key not in listed.stdout  # never the whole key
    async with aiohttp.ClientSession(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}
    ) as s:
        assert (await call(s, "GET", "/v1/files"))[0] == 200
        assert _filecdn(stack, "admin", "revoke-key", key).returncode == 0
        assert (await call(s, "GET", "/v1/files"))[0] == 401
    missing = _filecdn(stack, "admin", "create-key", "--team", "no-such-team")
    assert missing.returncode == 1 and "no team" in missing.stderr


async def test_keys_are_stored_only_as_hashes(res: Resources, team: TeamKey) -> None:
    rows = await res.db.fetch("SELECT * FROM api_keys WHERE team_id = $1", team.team.id)
    assert rows and all(team.key.encode() not in bytes(r["key_hash"]) for r in rows)
    assert all(team.key not in str(dict(r).values()) for r in rows)
