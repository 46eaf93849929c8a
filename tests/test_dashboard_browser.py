"""The ops dashboard in a real browser (Debian's headless Chromium through Playwright, like
tests/test_browser.py): an operator signs in with the token, real traffic shows up in the
charts and the top links, no console errors, the token never leaves the tab except in
Authorization headers.

Screenshots (1400x1000) go to the stack's data dir, and also to $DASHBOARD_SCREENSHOTS
when set (`DASHBOARD_SCREENSHOTS=docs` refreshes the README's docs/dashboard.png).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared import teams
from shared.resources import Resources
from tests.conftest import Stack, WorkerHandle
from tests.helpers import call, create, png, revoke, upload, wait_for

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1400, "height": 1000}
STEP_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
async def traffic(stack: Stack, res: Resources) -> AsyncIterator[None]:
    """A team's worth of lifecycle changes and edge traffic, made through the real API and
    edge: uploads, URLs created, updated, revoked and expiring, hits, misses, a 404 or two."""
    team = await teams.create_team(res.db, f"team-dash-{uuid.uuid4().hex[:8]}")
    key = await teams.create_key(res.db, team.name)
    async with (
        aiohttp.ClientSession(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}
        ) as api,
        aiohttp.ClientSession() as anon,
    ):
        links = []
        for i, size in enumerate((2_000, 40_000, 300_000, 1_200_000)):
            f = await upload(api, png(size), f"dash-{i}.png")
            status, made = await create(api, f["id"], {"expires_after": 3600})
            assert status == 200, made
            links.append((f["id"], made["public_url"]))
        assert (await create(api, links[0][0], {"expires_after": 7200}))[0] == 200
        for _ in range(6):
            for _, url in links:
                assert (await call(anon, "GET", url))[0] == 200
        assert (await call(anon, "GET", links[1][1], headers={"Range": "bytes=0-99"}))[0] == 206
        await revoke(api, links[3][0])
        assert (await call(anon, "GET", links[3][1]))[0] == 404
        missing = "file_00000000-0000-4000-8000-000000000000"
        assert (await call(api, "GET", f"/v1/files/{missing}"))[0] == 404
        short = await upload(api, png(), "short.png")
        assert (await create(api, short["id"], {"expires_after": 1}))[0] == 200
        assert (await call(api, "DELETE", f"/v1/files/{links[2][0]}"))[0] == 200
    yield


async def _new_page(browser: Any) -> tuple[Any, list[str]]:
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    return page, problems


async def _charts_with_data(page: Any) -> list[str]:
    """The charts whose traces hold a value above zero (Plotly keeps them on the element)."""
    found: list[str] = await page.evaluate(
        """() => Array.from(document.querySelectorAll('.chart'))
            .filter(el => (el.data || []).some(tr => (tr.y || []).some(v => v > 0)))
            .map(el => el.dataset.chart)"""
    )
    return found


async def _screenshot(page: Any, stack: Stack, name: str) -> Path:
    path = stack.data_dir / "screenshots" / name
    path.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(path))
    extra = os.environ.get("DASHBOARD_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(extra) / name))
    return path


async def test_an_operator_signs_in_and_sees_the_traffic_in_the_charts(
    browser: Any, stack: Stack, worker: WorkerHandle, traffic: None
) -> None:
    page, problems = await _new_page(browser)
    try:
        await page.goto(stack.ops_url + "/")
        await page.wait_for_selector("#login-form", state="visible")
        await page.fill("#token", stack.ops_token)
        await page.click("#login button[type=submit]")
        await page.wait_for_selector("#board", state="visible")
        await page.wait_for_function(
            "() => document.querySelectorAll('.chart .main-svg').length >= 12"
        )

        # The page refreshes every 5 s; the edge and the worker report within seconds.
        drawn: list[str] = []

        async def enough() -> bool:
            drawn[:] = await _charts_with_data(page)
            # The worker folds the edges' per-link counts: the top links name our files.
            links = await page.inner_text("#links")
            return len(drawn) >= 9 and "expiry_lag" in drawn and "dash-" in links

        await wait_for(enough, timeout=45, what="at least 9 charts with traffic, and top links")
        assert {"edge_requests", "edge_bytes", "edge_cache", "edge_latency", "origin"} <= set(drawn)
        assert {"api_requests", "api_errors", "lifecycle"} <= set(drawn)
        # The tiles and tables say the same in numbers.
        tiles = await page.inner_text("#stats")
        assert "EDGE REQ/S" in tiles.upper() and "ACTIVE URLS" in tiles.upper()
        health = await page.inner_text("#health")
        assert health.count("ok") == 3, health
        assert await page.evaluate("() => sessionStorage.getItem('filecdn.ops.token')") == (
            stack.ops_token
        )
        assert await page.evaluate("() => localStorage.length") == 0

        # Other windows: the same charts, in minutes over 15 of them, in 10-minute steps over
        # a day.
        for name, points, shot in (("15m", 15, "dashboard.png"), ("24h", 144, "dashboard-24h.png")):
            await page.click(f"#windows button[data-window='{name}']")
            await page.wait_for_function(
                """(n) => { const el = document.getElementById('chart-edge_requests');
                    return el && el.data && el.data[0].x.length === n; }""",
                arg=points,
            )
            assert "edge_requests" in await _charts_with_data(page)
            await _screenshot(page, stack, shot)
        assert problems == [], problems
    finally:
        await page.context.close()


async def test_the_token_comes_from_the_fragment_and_travels_only_in_a_header(
    browser: Any, stack: Stack
) -> None:
    page, problems = await _new_page(browser)
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    try:
        await page.goto(f"{stack.ops_url}/#token={stack.ops_token}")
        await page.wait_for_selector("#board", state="visible")
        assert await page.evaluate("() => location.hash") == ""  # taken out of the address bar
        await page.reload()  # still signed in: the tab keeps it
        await page.wait_for_selector("#board", state="visible")
        api_calls = [(u, a) for u, a in sent if "/api/" in u]
        assert api_calls and all(a == f"Bearer {stack.ops_token}" for _, a in api_calls)
        assert not any(stack.ops_token in u for u, _ in sent)
        await page.click("#logout")
        await page.wait_for_selector("#login-form", state="visible")
        assert await page.evaluate("() => sessionStorage.getItem('filecdn.ops.token')") is None
        assert problems == [], problems
    finally:
        await page.context.close()


async def test_a_team_key_is_turned_away_at_the_login(
    browser: Any, stack: Stack, res: Resources
) -> None:
    team = await teams.create_team(res.db, f"team-dash-key-{uuid.uuid4().hex[:8]}")
    key = await teams.create_key(res.db, team.name)
    page, _ = await _new_page(browser)  # the refused requests are console errors here
    try:
        await page.goto(stack.ops_url + "/")
        await page.fill("#token", key)
        await page.click("#login button[type=submit]")
        await page.wait_for_function(
            "() => document.getElementById('login-error').textContent.includes('API key')"
        )
        assert await page.is_hidden("#board")
        assert await page.evaluate("() => sessionStorage.getItem('filecdn.ops.token')") is None
    finally:
        await page.context.close()
