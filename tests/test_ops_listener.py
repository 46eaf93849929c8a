"""The API's private ops listener (OPS_PORT): only an operator token reads its JSON, the
totals and charts follow real traffic, the URL and worker reports read PostgreSQL and
Redis, Prometheus names follow the conventions, and the page loads nothing from elsewhere.
"""

from __future__ import annotations

import gzip
import itertools
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from api.errors import PHRASES
from shared import ops_tokens, teams
from shared.resources import Resources
from tests.conftest import Stack, TeamKey, WorkerHandle, new_team
from tests.helpers import call, create, png, revoke, upload, wait_for


@pytest.fixture
async def ops(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the ops listener, signed in with the suite's operator token."""
    async with aiohttp.ClientSession(
        base_url=stack.ops_url, headers={"Authorization": f"Bearer {stack.ops_token}"}
    ) as session:
        yield session


async def _as(stack: Stack, token: str | None, path: str) -> tuple[int, Any, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(stack.ops_url + path, headers=headers) as r,
    ):
        return r.status, await r.json(), r.headers.get("WWW-Authenticate", "")


ENDPOINTS = ["/api/summary", "/api/series", "/api/health", "/api/worker", "/api/urls"]


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_only_an_operator_token_reads_the_ops_api(
    stack: Stack, res: Resources, team: TeamKey, path: str
) -> None:
    status, body, challenge = await _as(stack, None, path)
    assert (status, challenge) == (401, "Bearer")
    assert body["code"] == PHRASES["UNAUTHENTICATED"] and "operator token" in body["error"]
    assert (await _as(stack, "fcops_not-a-real-token", path))[0] == 401
    # A team's key is a real credential, of the wrong kind.
    status, body, _ = await _as(stack, team.key, path)
    assert status == 403 and body["code"] == PHRASES["PERMISSION_DENIED"]
    assert (await _as(stack, stack.ops_token, path))[0] == 200
    # A revoked operator token is as good as none.
    token = await ops_tokens.create(res.db, "short-lived")
    assert (await _as(stack, token, path))[0] == 200
    await ops_tokens.revoke(res.db, token)
    assert (await _as(stack, token, path))[0] == 401
    # A revoked team key is no credential at all: 401, not 403.
    await teams.revoke_key(res.db, team.key)
    assert (await _as(stack, team.key, path))[0] == 401


async def test_bad_parameters_get_json_400s(ops: aiohttp.ClientSession) -> None:
    for path in (
        "/api/summary?minutes=0",
        "/api/summary?minutes=10081",
        "/api/summary?minutes=abc",
        "/api/series?window=2h",
        "/api/urls?limit=0",
    ):
        status, body = await call(ops, "GET", path)
        assert status == 400 and body["code"] == PHRASES["INVALID_ARGUMENT"], (path, body)
    status, body = await call(ops, "GET", "/api/nope")
    assert status == 404 and body["code"] == PHRASES["NOT_FOUND"]


async def _summary(ops: aiohttp.ClientSession, minutes: int = 5) -> dict[str, Any]:
    status, body = await call(ops, "GET", f"/api/summary?minutes={minutes}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def test_summary_counts_the_windows_traffic(
    ops: aiohttp.ClientSession, api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    before = await _summary(ops)
    assert isinstance(before["edge"]["requests"], int)
    assert isinstance(before["urls"]["active"], int)
    f = await upload(api, png(3000))
    status, made = await create(api, f["id"], {"expires_after": 3600})
    assert status == 200
    assert (await create(api, f["id"], {"expires_after": 7200}))[0] == 200  # an update
    for _ in range(3):
        assert (await call(anon, "GET", made["public_url"]))[0] == 200
    middle = await _summary(ops)
    assert middle["urls"]["active"] == before["urls"]["active"] + 1
    await revoke(api, f["id"])
    assert (await call(anon, "GET", made["public_url"]))[0] == 404

    async def counted() -> bool:
        # The edge writes its counts once a second; the API its request counts too.
        now = await _summary(ops)
        return (
            now["edge"]["requests"] >= before["edge"]["requests"] + 4
            and now["edge"]["by_class"].get("4xx", 0)
            >= before["edge"]["by_class"].get("4xx", 0) + 1
            and now["api"]["requests"] >= before["api"]["requests"] + 4
        )

    await wait_for(counted, timeout=10, what="the edge's and API's counts in the summary")
    after = await _summary(ops)
    for group, name in (
        ("files", "uploaded"),
        ("urls", "created"),
        ("urls", "updated"),
        ("urls", "revoked"),
    ):
        assert after[group][name] >= before[group][name] + 1, (group, name)
    assert after["urls"]["active"] == before["urls"]["active"]
    assert after["edge"]["bytes"] >= before["edge"]["bytes"] + 3 * 3000
    # The first GET of a new object reads it from S3 (the origin).
    assert after["edge"]["origin"]["requests"] >= before["edge"]["origin"]["requests"] + 1
    assert after["edge"]["origin"]["bytes"] >= before["edge"]["origin"]["bytes"] + 3000
    assert after["edge"]["latency_ms"]["p99"] is not None
    assert after["minutes"] == 5 and after["from"] < after["to"]


@pytest.mark.parametrize(("window", "points", "step"), [("15m", 15, 60), ("7d", 168, 3600)])
async def test_series_cover_the_window_in_steps(
    ops: aiohttp.ClientSession, window: str, points: int, step: int
) -> None:
    status, body = await call(ops, "GET", f"/api/series?window={window}")
    assert status == 200
    assert body["window"] == window and body["step_seconds"] == step
    t = body["t"]
    assert len(t) == points and all(b - a == step * 1000 for a, b in itertools.pairwise(t))
    assert t[-1] <= time.time() * 1000 < t[-1] + step * 1000
    for name, chart in body["charts"].items():
        assert chart["title"] and chart["unit"], name
        for line in (*chart["lines"].values(), *chart.get("y2", {}).values()):
            assert len(line) == points, name
    assert {"edge_requests", "edge_latency", "api_requests", "lifecycle", "queue"} <= set(
        body["charts"]
    )


async def test_api_chart_names_routes_by_template_and_counts_errors(
    ops: aiohttp.ClientSession, api: aiohttp.ClientSession
) -> None:
    missing = "file_00000000-0000-4000-8000-000000000000"
    assert (await call(api, "GET", f"/v1/files/{missing}"))[0] == 404

    async def charted() -> bool:
        _, body = await call(ops, "GET", "/api/series?window=15m")
        routes = body["charts"]["api_requests"]["lines"]
        errors = body["charts"]["api_errors"]["lines"]
        return "GET /v1/files/{file_id}" in routes and "4xx GET /v1/files/{file_id}" in errors

    await wait_for(charted, timeout=10, what="the API's per-minute counts")
    _, body = await call(ops, "GET", "/api/series?window=15m")
    assert not any(missing in name for name in body["charts"]["api_requests"]["lines"])


async def test_urls_report_ranks_teams_by_quota_and_links_by_hits(
    ops: aiohttp.ClientSession, stack: Stack, res: Resources
) -> None:
    busy = await new_team(res)
    async with aiohttp.ClientSession(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {busy.key}"}
    ) as api:
        made = []
        for i in range(3):
            f = await upload(api, png(), f"busy-{i}.png")
            status, url = await create(api, f["id"], {})
            assert status == 200
            made.append((f, url))
    tokens = [u["public_url"].split("/")[-2] for _, u in made]
    # The worker folds the edges' per-link counts into public_url_minutes; here, by hand.
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    for token, hits in zip(tokens, (5, 500_000, 50), strict=True):
        await res.db.execute(
            """INSERT INTO public_url_minutes (url_id, team_id, minute, hits, bytes)
               SELECT id, team_id, $2, $3::bigint, $3::bigint * 1000
                 FROM public_urls WHERE token = $1""",
            token,
            minute,
            hits,
        )
    status, body = await call(ops, "GET", "/api/urls?minutes=10&limit=100")
    assert status == 200
    mine = [t for t in body["teams"] if t["team"] == busy.team.name]
    assert mine == [
        {
            "team": busy.team.name,
            "active": 3,
            "quota": body["quota"],
            "ratio": round(3 / body["quota"], 4),
        }
    ]
    links = body["top_links"]
    assert [link["hits"] for link in links] == sorted(
        (link["hits"] for link in links), reverse=True
    )
    top = links[0]
    assert top["hits"] == 500_000 and top["bytes"] == 500_000_000
    assert top["team"] == busy.team.name and top["filename"] == "busy-1.png" and top["live"]
    assert top["token_prefix"] == tokens[1][:4]
    assert not any(t in str(body) for t in tokens), "a full token left the database"


async def test_worker_report_shows_the_queue_the_stream_and_the_last_reconcile(
    ops: aiohttp.ClientSession, api: aiohttp.ClientSession, worker: WorkerHandle
) -> None:
    f = await upload(api, png())
    assert (await create(api, f["id"], {"expires_after": 3600}))[0] == 200  # a deferred job

    async def reported() -> bool:
        _, body = await call(ops, "GET", "/api/worker")
        return body["reconcile"] is not None and any(
            c["name"].endswith(f"-{worker.proc.pid}") for c in body["events"]["consumers"]
        )

    assert worker.proc is not None
    await wait_for(reported, timeout=20, what="the worker's reconcile record and its consumer")
    _, body = await call(ops, "GET", "/api/worker")
    assert body["queue"]["depth"] >= 1 and body["queue"]["oldest_overdue_seconds"] >= 0
    last = body["reconcile"]
    assert last["ok"] and last["last_ok_at"] <= time.time() and isinstance(last["fixed"], dict)
    assert body["events"]["pending"] >= 0


async def test_health_report_times_each_dependency(ops: aiohttp.ClientSession) -> None:
    status, body = await call(ops, "GET", "/api/health")
    assert status == 200 and body["status"] == "ok"
    assert set(body["checks"]) == {"postgres", "redis", "s3"}
    assert all(c["ok"] and c["ms"] >= 0 and c["error"] is None for c in body["checks"].values())


async def test_prometheus_names_follow_conventions_with_bounded_labels(
    ops: aiohttp.ClientSession, api: aiohttp.ClientSession
) -> None:
    f = await upload(api, png())
    assert (await call(api, "GET", f"/v1/files/{f['id']}"))[0] == 200
    status, text = await call(ops, "GET", "/metrics")
    assert status == 200
    text = text.decode()
    assert 'filecdn_api_requests_total{method="GET",route="/v1/files/{file_id}",status="200"}' in (
        text
    )
    assert "filecdn_api_request_duration_seconds_bucket{" in text
    assert f["id"] not in text, "a path, not a route template, became a label"
    for gauge in (
        'filecdn_dependency_up{dependency="redis"} 1.0',
        "filecdn_jobs_queued ",
        "filecdn_jobs_overdue_seconds ",
        "filecdn_events_pending_oldest_seconds ",
        "filecdn_public_urls_active ",
        "filecdn_public_url_quota_max_usage_ratio ",
    ):
        assert gauge in text, gauge
    # Counters end in _total, durations are in seconds; no milliseconds anywhere.
    for name, kind in re.findall(r"^# TYPE (filecdn_\S+) (\S+)$", text, re.M):
        if kind == "counter":
            assert name.endswith("_total"), name
        assert "_ms" not in name and "milli" not in name, name


async def test_dashboard_page_loads_only_its_own_assets_cached_and_compressed(
    stack: Stack,
) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.get(stack.ops_url + "/") as r:
            page = await r.text()
            assert r.status == 200 and r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
        assert len(assets) == 3 and not re.search(r'(?:src|href)="(?:https?:)?//', page)
        plotly = next(a for a in assets if a.endswith("/plotly.min.js"))
        async with s.get(stack.ops_url + plotly, headers={"Accept-Encoding": "gzip"}) as r:
            assert r.status == 200 and r.headers["Content-Encoding"] == "gzip"
            assert "immutable" in r.headers["Cache-Control"]
            script = gzip.decompress(await r.read())
            assert len(script) > 1_000_000 and b"plotly" in script[:2000].lower()
        stale = re.sub(r"/static/[^/]+/", "/static/0000/", plotly)
        async with s.get(stack.ops_url + stale) as r:
            assert r.status == 404


async def test_admin_commands_create_list_and_revoke_operator_tokens(stack: Stack) -> None:
    def admin(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "cli", "admin", *args],
            env={**stack.env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()

    name = f"oncall-{uuid.uuid4().hex[:6]}"
    token = admin("create-ops-token", "--name", name)
    assert re.fullmatch(r"fcops_[\w-]{43}", token)
    assert (await _as(stack, token, "/api/health"))[0] == 200
    row = next(line for line in admin("list-ops-tokens").splitlines() if name in line)
    assert token[:12] in row and token not in row
    token_id = re.search(r"\d+", row)
    assert token_id is not None
    assert "revoked operator token" in admin("revoke-ops-token", token_id.group())
    assert (await _as(stack, token, "/api/health"))[0] == 401
