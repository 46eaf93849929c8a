"""A real browser against the edge: Debian's headless Chromium, driven by Playwright.

What a web developer relies on when they put a public URL in a page: an ``<img>`` shows, a
cross-origin ``<img crossorigin>`` can be read back through a canvas (CORS), a ``<video>``
plays and seeks (Range requests, seen both by the browser and in the edge's access log), and
once the URL is revoked the image stops loading on reload, with no cache-busting: the edge's
``Cache-Control`` makes the browser revalidate, and the revalidation gets the 404.

Chromium comes from Debian (``/usr/bin/chromium``). Where it is missing the session installs
it with apt-get when it can (root, apt-get present), else every test here is skipped with the
reason and the command that installs it. Playwright never downloads a browser here.

The tests start their own edge process (same stack, own ports) with ``EDGE_ACCESS_LOG=true``
so that they can read the per-request log it writes.
"""

from __future__ import annotations

import contextlib
import html
import struct
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from aiohttp import web

from cli.embedded import free_port
from shared import teams
from shared.resources import Resources
from tests.conftest import Stack
from tests.helpers import OwnEdge, create, own_edge, revoke, upload, wait_for

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="Playwright is missing: pip install -e '.[dev]'"
)
Browser = playwright_api.Browser
Page = playwright_api.Page
Response = playwright_api.Response

pytestmark = pytest.mark.browser

# 6 s of 640x360 H.264 (Main), a keyframe every second, moov at the end (no faststart), so
# that the browser must issue Range requests to start playing at all. See tests/data/README.
SAMPLE_MP4 = Path(__file__).parent / "data" / "sample.mp4"
SAMPLE_DURATION = 6.0
PNG_SIZE = (64, 48)
STEP_TIMEOUT_MS = 15_000
# The emulated link for the video: about 3 Mbit/s, a little above the sample's 2 Mbit/s.
VIDEO_LINK_BYTES_PER_S = 375_000


# --- media ----------------------------------------------------------------------------


def pixel(x: int, y: int) -> tuple[int, int, int]:
    return (x * 4) % 256, (y * 5) % 256, 128


def make_png(width: int, height: int) -> bytes:
    """A real, decodable RGB PNG (8 bits per channel, no filter) of a known gradient."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    raw = b"".join(
        b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


# --- the edge under test, with its access log -------------------------------------------


@pytest.fixture(scope="module")
def logged_edge(stack: Stack) -> Iterator[OwnEdge]:
    with own_edge(stack, workers=1) as edge:
        yield edge


# --- the page's origin: another port than the edge --------------------------------------


async def _page(request: web.Request) -> web.Response:
    q = request.query
    body = ["<!doctype html><meta charset=utf-8><title>filecdn browser test</title>"]
    if "img" in q:
        cors = ' crossorigin="anonymous"' if q.get("cors") == "1" else ""
        body.append(
            f'<img id="img" src="{html.escape(q["img"])}"{cors}'
            " onload=\"window.imgState='load'\" onerror=\"window.imgState='error'\">"
        )
    if "video" in q:
        body.append(
            f'<video id="video" src="{html.escape(q["video"])}" muted playsinline'
            ' preload="auto" onerror="window.videoError=true"></video>'
        )
    return web.Response(text="\n".join(body), content_type="text/html", charset="utf-8")


@pytest.fixture(scope="module")
async def page_origin() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", _page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def page_url(origin: str, **params: str) -> str:
    return origin + "/?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


# --- a team of our own and its API client -------------------------------------------------


@pytest.fixture(scope="module")
async def team_api(stack: Stack, res: Resources) -> AsyncIterator[aiohttp.ClientSession]:
    team = await teams.create_team(res.db, f"team-browser-{uuid.uuid4().hex[:12]}")
    key = await teams.create_key(res.db, team.name)
    async with aiohttp.ClientSession(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}
    ) as session:
        yield session


@dataclass
class Shared:
    file_id: str
    public_url: str  # as the API returned it (the stack's own edge)
    url: str  # the same token and name on the logged edge

    @property
    def token(self) -> str:
        return urlsplit(self.public_url).path.split("/")[1]

    @property
    def name(self) -> str:
        return urlsplit(self.public_url).path.split("/")[2]


async def share(api: aiohttp.ClientSession, edge: OwnEdge, data: bytes, filename: str) -> Shared:
    f = await upload(api, data, filename)
    status, body = await create(api, f["id"], {})
    assert status == 200, body
    return Shared(f["id"], body["public_url"], edge.public(body["public_url"]))


@dataclass
class Network:
    """What the browser saw: every response, with the Range header of its request."""

    responses: list[Response] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # URLs of requests that got no response

    def attach(self, page: Page) -> None:
        page.on("response", self._record)
        page.on("requestfailed", lambda request: self.failed.append(request.url))

    def _record(self, response: Response) -> None:
        self.responses.append(response)

    async def seen(self, url: str) -> list[tuple[int, str | None]]:
        return [
            (r.status, await r.request.header_value("range"))
            for r in self.responses
            if r.url == url
        ]


async def new_page(browser: Browser) -> tuple[Page, Network]:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    net = Network()
    net.attach(page)
    return page, net


async def image_state(page: Page) -> dict[str, Any]:
    """Wait until the <img> has loaded or failed; its state and natural size."""
    await page.wait_for_function("() => window.imgState !== undefined")
    state: dict[str, Any] = await page.evaluate(
        """() => {
            const img = document.getElementById('img');
            return {state: window.imgState, complete: img.complete,
                    width: img.naturalWidth, height: img.naturalHeight};
        }"""
    )
    return state


# --- the tests ------------------------------------------------------------------------------


async def test_image_from_a_public_url_shows(
    browser: Browser, logged_edge: OwnEdge, page_origin: str, team_api: aiohttp.ClientSession
) -> None:
    img = await share(team_api, logged_edge, make_png(*PNG_SIZE), "gradient.png")
    page, net = await new_page(browser)
    try:
        await page.goto(page_url(page_origin, img=img.url))
        state = await image_state(page)
        assert state == {
            "state": "load",
            "complete": True,
            "width": PNG_SIZE[0],
            "height": PNG_SIZE[1],
        }
        assert [s for s, _ in await net.seen(img.url)] == [200]
    finally:
        await page.context.close()


async def test_cross_origin_image_pixels_are_readable_with_cors(
    browser: Browser, logged_edge: OwnEdge, page_origin: str, team_api: aiohttp.ClientSession
) -> None:
    """<img crossorigin> from another origin loads only with Access-Control-Allow-Origin, and
    then its pixels can be read back: the decoded image is exactly the one uploaded."""
    img = await share(team_api, logged_edge, make_png(*PNG_SIZE), "gradient.png")
    page, _ = await new_page(browser)
    try:
        await page.goto(page_url(page_origin, img=img.url, cors="1"))
        state = await image_state(page)
        assert state["state"] == "load", f"CORS image did not load: {state}"
        probes = [(0, 0), (PNG_SIZE[0] - 1, 0), (17, 23), (PNG_SIZE[0] - 1, PNG_SIZE[1] - 1)]
        got = await page.evaluate(
            """(probes) => {
                const img = document.getElementById('img');
                const c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const ctx = c.getContext('2d');
                ctx.drawImage(img, 0, 0);
                return probes.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data));
            }""",
            probes,
        )
        assert got == [[*pixel(x, y), 255] for x, y in probes]
    finally:
        await page.context.close()


async def test_video_plays_and_seeks_with_range_requests(
    browser: Browser, logged_edge: OwnEdge, page_origin: str, team_api: aiohttp.ClientSession
) -> None:
    mp4 = SAMPLE_MP4.read_bytes()
    assert len(mp4) >= 1024 * 1024  # large enough that the browser reads it in pieces
    video = await share(team_api, logged_edge, mp4, "sample.mp4")
    page, net = await new_page(browser)
    try:
        # On loopback the whole file would arrive before the first frame shows, and a seek
        # would need no request at all: a link a little faster than the video's bitrate makes
        # the browser fetch the moov at the end, then the data for the seek, with Range.
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Network.enable")
        await cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 5,
                "downloadThroughput": VIDEO_LINK_BYTES_PER_S,
                "uploadThroughput": VIDEO_LINK_BYTES_PER_S,
            },
        )
        await page.goto(page_url(page_origin, video=video.url))
        await page.evaluate("() => document.getElementById('video').play()")
        # It plays: time advances.
        await page.wait_for_function(
            "() => { const v = document.getElementById('video');"
            " return v.error === null && v.currentTime > 0.5; }"
        )
        duration = await page.evaluate("() => document.getElementById('video').duration")
        assert abs(duration - SAMPLE_DURATION) < 0.1

        # Seek near the end: the seek completes with data for the new position.
        target = duration - 0.5
        before_seek = len(net.responses)
        after_seek = await page.evaluate(
            """([target, timeoutMs]) => new Promise((resolve, reject) => {
                const v = document.getElementById('video');
                const b = v.buffered;
                let buffered = false;
                for (let i = 0; i < b.length; i++)
                    buffered ||= b.start(i) <= target && target < b.end(i);
                const timer = setTimeout(
                    () => reject(new Error('no seeked event; readyState ' + v.readyState)),
                    timeoutMs);
                v.addEventListener('seeked', () => {
                    clearTimeout(timer);
                    resolve({time: v.currentTime, readyState: v.readyState, buffered,
                             seekableEnd: v.seekable.length ? v.seekable.end(0) : 0});
                }, {once: true});
                v.currentTime = target;
            })""",
            [target, STEP_TIMEOUT_MS],
        )
        # Without Range support the browser cannot seek outside what it has buffered.
        why = f"{after_seek}; the browser saw (status, range): {await net.seen(video.url)}"
        assert after_seek["time"] >= target - 0.05, why
        assert after_seek["readyState"] >= 2, why
        assert after_seek["seekableEnd"] >= duration - 0.1, why
        # ... and playback goes on from there, to the end.
        await page.wait_for_function(
            """(target) => { const v = document.getElementById('video');
                return v.error === null && v.readyState >= 2
                    && (v.ended || v.currentTime > target + 0.2); }""",
            arg=target,
        )
        assert await page.evaluate("() => window.videoError === undefined")

        # The browser asked for ranges and got 206s, including one for the seek (unless the
        # target happened to be buffered already on a slow machine).
        seen = await net.seen(video.url)
        # (A 200 would mean the edge ignored the Range; a 304 answers a conditional Range
        # request the browser makes to revalidate what its cache already holds.)
        assert all(status in (206, 304) for status, _ in seen), f"not all partial: {seen}"
        partial = [rng for status, rng in seen if status == 206 and rng]
        assert any(range_start(rng) > 0 for rng in partial), f"no Range past byte 0: {seen}"
        if not after_seek["buffered"]:
            for_seek = [
                rng
                for r in net.responses[before_seek:]
                if r.url == video.url
                and r.status == 206
                and (rng := await r.request.header_value("range"))
                and range_start(rng) > 0
            ]
            assert for_seek, f"the seek made no Range request: {seen}"

        # The edge's access log says the same, without the token in it.
        log = logged_edge.access()
        mine = [e for e in log if str(e["path"]).endswith("/" + video.name)]
        ranged = [e for e in mine if e["status"] == 206 and e.get("range")]
        assert ranged, f"no 206 with a range in the edge access log: {mine or log[-5:]}"
        assert all(e["method"] == "GET" and e.get("bytes", 0) > 0 for e in ranged), ranged
        assert any(range_start(str(e["range"])) > 0 for e in ranged), ranged
        assert all(video.token[:4] in str(e["path"]) for e in mine), mine
        assert video.token not in logged_edge.log_text(), "the edge log leaks a full token"
    finally:
        await page.context.close()


def range_start(header: str) -> int:
    """The first byte of a single `bytes=a-b` range; -1 for a suffix range."""
    first = header.removeprefix("bytes=").split(",")[0].split("-")[0].strip()
    return int(first) if first else -1


async def test_revoked_image_stops_loading_on_reload(
    browser: Browser, logged_edge: OwnEdge, page_origin: str, team_api: aiohttp.ClientSession
) -> None:
    img = await share(team_api, logged_edge, make_png(*PNG_SIZE), "revoked.png")
    page, net = await new_page(browser)
    try:
        url = page_url(page_origin, img=img.url)
        await page.goto(url)
        assert (await image_state(page))["width"] == PNG_SIZE[0]

        status, body = await revoke(team_api, img.file_id)
        assert status == 200 and body["revoked"] is True, body

        # The same page, the same image URL: no cache-busting. The browser may only show the
        # image again if it may reuse its cached copy; the edge's Cache-Control forbids that.
        await page.reload()
        assert page.url == url
        state = await image_state(page)
        assert state["state"] == "error" and state["width"] == 0, state
        # The reload asked the edge again (no-cache) and got the 404. Chromium may show it
        # to Playwright as a failed request instead: its Opaque Response Blocking drops a
        # `text/plain` + `nosniff` answer to an <img> before any "response" event.
        mine = [e for e in logged_edge.access() if str(e["path"]).endswith(img.name)]
        assert [e["status"] for e in mine] == [200, 404], mine

        async def reload_reported() -> bool:  # the browser's events may come a little later
            seen = [s for s, _ in await net.seen(img.url)]
            return seen == [200, 404] or (seen == [200] and img.url in net.failed)

        with contextlib.suppress(AssertionError):
            await wait_for(reload_reported, 5, "the reload's answer")
        seen = [s for s, _ in await net.seen(img.url)]
        assert seen == [200, 404] or (seen == [200] and img.url in net.failed), (seen, net.failed)
    finally:
        await page.context.close()
