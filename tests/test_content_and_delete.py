"""Reading bytes back (with Range) and deleting files."""

from __future__ import annotations

import subprocess
import sys

import aiohttp

from cli.embedded import free_port, wait_until
from shared.resources import Resources
from tests.conftest import Stack, TeamKey, WorkerHandle
from tests.helpers import call, png, snapshot, upload, wait_for


async def test_content_supports_single_ranges(api: aiohttp.ClientSession) -> None:
    data = png(100_000)
    fid = (await upload(api, data))["id"]
    path = f"/v1/files/{fid}/content"
    async with api.get(path, headers={"Range": "bytes=10-19"}) as r:
        assert r.status == 206 and await r.read() == data[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    async with api.get(path, headers={"Range": "bytes=-5"}) as r:
        assert r.status == 206 and await r.read() == data[-5:]
    async with api.get(path, headers={"Range": "bytes=99990-"}) as r:
        assert r.status == 206 and await r.read() == data[99990:]
    async with api.get(path, headers={"Range": f"bytes={len(data) + 10}-"}) as r:
        assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    async with api.get(path) as r:
        assert r.status == 200 and r.headers["Accept-Ranges"] == "bytes"
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert "attachment" in r.headers["Content-Disposition"]


async def test_content_format_text_only_for_text_files(api: aiohttp.ClientSession) -> None:
    text = await upload(api, "héllo\n".encode(), "notes.txt", content_type="text/plain")
    status, body = await call(api, "GET", f"/v1/files/{text['id']}/content?format=text")
    assert status == 200 and body == "héllo\n".encode()
    image = await upload(api, png())
    status, body = await call(api, "GET", f"/v1/files/{image['id']}/content?format=text")
    assert status == 400 and "text/*" in body["error"]
    status, body = await call(api, "GET", f"/v1/files/{image['id']}/content?format=pdf")
    assert status == 400


async def test_delete_makes_the_file_disappear_everywhere(api: aiohttp.ClientSession) -> None:
    f = await upload(api, png())
    status, body = await call(api, "DELETE", f"/v1/files/{f['id']}")
    assert (status, body) == (200, {"id": f["id"], "object": "file", "deleted": True})
    for method, suffix in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        assert (await call(api, method, f"/v1/files/{f['id']}{suffix}"))[0] == 404
    _, listing = await call(api, "GET", "/v1/files")
    assert f["id"] not in [x["id"] for x in listing["data"]]


async def test_deleted_files_object_is_removed_by_the_worker(
    api: aiohttp.ClientSession, res: Resources, worker: object
) -> None:
    f = await upload(api, png())
    key = await res.db.fetchval("SELECT object_key FROM files WHERE id = $1", f["id"])
    await call(api, "DELETE", f"/v1/files/{f['id']}")

    async def gone() -> bool:
        # The object goes inside the handler's transaction; the row says so once it commits.
        return await res.storage.stat(key) is None and bool(
            await res.db.fetchval(
                "SELECT object_deleted_at IS NOT NULL FROM files WHERE id = $1", f["id"]
            )
        )

    await wait_for(gone, what="object deletion, recorded on the row")


async def test_expired_file_is_invisible_without_the_worker(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    f = await upload(api, png(), before={"expires_after": "1"})
    assert (await call(api, "GET", f"/v1/files/{f['id']}"))[0] == 200

    async def invisible() -> bool:
        return (await call(api, "GET", f"/v1/files/{f['id']}"))[0] == 404

    await wait_for(invisible, timeout=5, what="file expiry")
    assert (await call(api, "GET", f"/v1/files/{f['id']}/content"))[0] == 404
    _, listing = await call(api, "GET", "/v1/files")
    assert f["id"] not in [x["id"] for x in listing["data"]]
    # The row is still there: deletion itself is the worker's job.
    assert await res.db.fetchval("SELECT deleted_at FROM files WHERE id = $1", f["id"]) is None


async def test_file_expiry_job_deletes_row_and_object(
    api: aiohttp.ClientSession, res: Resources, worker: object
) -> None:
    f = await upload(api, png(), before={"expires_after": "1"})
    key = await res.db.fetchval("SELECT object_key FROM files WHERE id = $1", f["id"])

    async def retired() -> bool:
        row = await res.db.fetchrow(
            "SELECT delete_reason, object_deleted_at FROM files WHERE id = $1", f["id"]
        )
        return row["delete_reason"] == "expired" and row["object_deleted_at"] is not None

    await wait_for(retired, timeout=20, what="file expiry by the worker")
    assert await res.storage.stat(key) is None


async def test_public_port_says_alive_and_keeps_operations_to_the_ops_port(
    anon: aiohttp.ClientSession, stack: Stack
) -> None:
    assert await call(anon, "GET", "/healthz") == (200, {"status": "ok"})
    for path in ("/readyz", "/metrics", "/api/summary"):
        assert (await call(anon, "GET", path))[0] == 404, path
    assert await call(anon, "GET", f"{stack.ops_url}/healthz") == (200, {"status": "ok"})
    status, body = await call(anon, "GET", f"{stack.ops_url}/readyz")
    assert status == 200 and body["checks"] == {"postgres": "ok", "redis": "ok", "s3": "ok"}


async def test_unknown_route_and_method_get_json_errors(
    api: aiohttp.ClientSession, res: Resources, team: TeamKey
) -> None:
    before = await snapshot(res, team.team)
    status, body = await call(api, "GET", "/v1/nothing-here")
    assert status == 404 and "no such endpoint" in body["error"]
    status, body = await call(api, "PUT", "/v1/files")
    assert status == 405 and body["error"]
    assert await snapshot(res, team.team) == before


def test_worker_liveness_check_follows_the_worker(stack: Stack) -> None:
    """`filecdn worker --check` asks the worker on this machine's WORKER_OPS_PORT."""
    env = {**stack.env, "WORKER_OPS_PORT": str(free_port())}

    def check() -> int:
        return subprocess.run(
            [sys.executable, "-m", "cli", "worker", "--check"],
            env=env,
            capture_output=True,
            timeout=30,
        ).returncode

    assert check() == 1  # no worker here yet
    worker = WorkerHandle(stack)
    worker.start(WORKER_OPS_PORT=env["WORKER_OPS_PORT"])
    try:
        wait_until(lambda: check() == 0, 20, "the worker reporting alive")
    finally:
        worker.stop()
    assert check() == 1
