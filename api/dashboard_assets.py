"""The dashboard page and what it loads: our page, script and styles, and Plotly's bundle
taken from the `plotly` wheel (`plotly/package_data/plotly.min.js`): nothing from a CDN, so
the page works offline.

Each asset is served under `/static/<version>/<name>` (our files: a hash of their content;
Plotly: its package version), so it may be cached for a year; gzip-compressed once, when
first asked for.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

PAGE_DIR = Path(__file__).parent / "dashboard"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}
# The page holds an operator token: it loads nothing from elsewhere and is framed by nobody.
# Plotly adds its own <style> elements, hence 'unsafe-inline' for styles only.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
_IMMUTABLE = "public, max-age=31536000, immutable"


def plotly_bundle() -> tuple[Path, str]:
    """Where the installed plotly wheel keeps plotly.min.js, and the package's version.
    Found without importing plotly (its Python side is never used)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed (it ships the charts' script)")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"plotly.min.js is missing from the plotly package at {path}")
    return path, importlib.metadata.version("plotly")


@dataclass
class Asset:
    path: Path
    version: str
    content_type: str
    _body: bytes | None = None
    _gzipped: bytes | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def bodies(self) -> tuple[bytes, bytes]:
        """(plain, gzipped), read and compressed once, off the event loop."""
        async with self._lock:
            if self._body is None or self._gzipped is None:
                self._body = await asyncio.to_thread(self.path.read_bytes)
                self._gzipped = await asyncio.to_thread(gzip.compress, self._body, 6)
            return self._body, self._gzipped


class Assets:
    def __init__(self) -> None:
        plotly, plotly_version = plotly_bundle()
        self.assets = {"plotly.min.js": Asset(plotly, plotly_version, _TYPES[".js"])}
        for name in ("app.js", "style.css"):
            path = PAGE_DIR / name
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            self.assets[name] = Asset(path, digest, _TYPES[path.suffix])
        page = (PAGE_DIR / "index.html").read_text("utf-8")
        for name, asset in self.assets.items():
            page = page.replace(f"{{{{ {name} }}}}", f"/static/{asset.version}/{name}")
        self.page = page.encode()

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(body=self.page, content_type="text/html", headers=PAGE_HEADERS)

    async def static(self, request: web.Request) -> web.Response:
        asset = self.assets.get(request.match_info["name"])
        if asset is None or asset.version != request.match_info["version"]:
            raise web.HTTPNotFound()
        plain, gzipped = await asset.bodies()
        headers = {
            "Content-Type": asset.content_type,
            "Cache-Control": _IMMUTABLE,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=gzipped, headers={**headers, "Content-Encoding": "gzip"})
        return web.Response(body=plain, headers=headers)
