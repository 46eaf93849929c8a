"""Response headers, built once and reused: per token record, and per error status.

A record's headers (type, validators, disposition, CORS, caching) depend only on the
record's bytes, so they are rendered the first time those exact bytes come back from Redis
and reused after that. This memoises rendering, not authorisation: the bytes still come
from Redis on every request, and the deadline is still compared with the clock every time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from cdn_edge.conditional import http_date
from shared.disposition import content_disposition
from shared.token_cache import UrlRecord

_MAX_VIEWS = 8192
_VISIBLE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_ETAG = re.compile(r'"[\x21\x23-\x7e]*"')

ALLOW = "GET, HEAD, OPTIONS"
SERVER = "filecdn-edge"

# Headers a script on another origin may read: what a player or a downloader needs.
_EXPOSE = "Accept-Ranges, Content-Disposition, Content-Length, Content-Range, ETag, Last-Modified"
_REQUEST_HEADERS = (
    "Range, If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, If-Range"
)
_SAFETY = {
    "Server": SERVER,
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": _EXPOSE,
}
_NO_STORE = {"Cache-Control": "no-store", **_SAFETY}


def _frozen(headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(headers))


class RecordView:
    """A decoded record with its response headers rendered."""

    __slots__ = (
        "headers_200",
        "headers_304",
        "headers_412",
        "headers_416",
        "headers_full",
        "record",
    )

    def __init__(self, record: UrlRecord, cache_control: str) -> None:
        for value in (record.content_type, record.name, record.object_key):
            if not _VISIBLE.fullmatch(value):
                raise ValueError("record field is not a header-safe string")
        if not _ETAG.fullmatch(record.etag) or record.size < 0:
            raise ValueError("record etag is not a quoted entity tag")
        self.record = record
        validators = {
            "ETag": record.etag,
            "Last-Modified": http_date(record.last_modified),
            "Cache-Control": cache_control,
        }
        self.headers_200 = _frozen(
            {
                "Content-Type": record.content_type,
                **validators,
                "Accept-Ranges": "bytes",
                "Content-Disposition": content_disposition("inline", record.name),
                **_SAFETY,
            }
        )
        # The whole object's 200, Content-Length included: the common answer, built once.
        full = CIMultiDict(self.headers_200)
        full["Content-Length"] = str(record.size)
        self.headers_full = CIMultiDictProxy(full)
        # RFC 9110 §15.4.5: a 304 carries the validators and caching fields, not metadata.
        self.headers_304 = _frozen({**validators, **_SAFETY})
        self.headers_416 = _frozen(
            {"Content-Range": f"bytes */{record.size}", "Accept-Ranges": "bytes", **_NO_STORE}
        )
        self.headers_412 = _frozen(_NO_STORE)

    def headers(self, length: int, content_range: str | None = None) -> CIMultiDict[str]:
        """The 200/206 headers with the body's length (and range) filled in."""
        headers = CIMultiDict(self.headers_200)
        headers["Content-Length"] = str(length)
        if content_range is not None:
            headers["Content-Range"] = content_range
        return headers


class RecordViews:
    """Raw record bytes → RecordView, bounded; a corrupt record raises ValueError."""

    def __init__(self, cache_control: str) -> None:
        if not _VISIBLE.fullmatch(cache_control):
            raise ValueError("EDGE_CACHE_CONTROL must be a single-line header value")
        self._cache_control = cache_control
        self._views: dict[bytes, RecordView] = {}

    def get(self, raw: bytes) -> RecordView:
        view = self._views.get(raw)
        if view is None:
            try:
                record = UrlRecord.decode(raw)
            except (TypeError, KeyError, AttributeError, ValueError) as exc:
                raise ValueError(f"undecodable token record: {exc}") from exc
            view = RecordView(record, self._cache_control)
            if len(self._views) >= _MAX_VIEWS:
                self._views.clear()  # cheaper than LRU upkeep on every hit; refilled at once
            self._views[raw] = view
        return view


_REASONS = {
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_ERROR_HEADERS = {
    status: _frozen(
        {
            "Content-Type": "text/plain; charset=utf-8",
            **_NO_STORE,
            **({"Allow": ALLOW} if status == 405 else {}),
            **({"Retry-After": "1"} if status == 503 else {}),
        }
    )
    for status in _REASONS
}
_ERROR_BODIES = {status: f"{reason}\n".encode() for status, reason in _REASONS.items()}


def error(status: int) -> web.Response:
    """The one response for each error status: every 404 is the same as every other."""
    return web.Response(status=status, body=_ERROR_BODIES[status], headers=_ERROR_HEADERS[status])


_PREFLIGHT = _frozen(
    {
        "Allow": ALLOW,
        "Access-Control-Allow-Methods": ALLOW,
        "Access-Control-Allow-Headers": _REQUEST_HEADERS,
        "Access-Control-Max-Age": "86400",
        **_NO_STORE,
    }
)


def preflight() -> web.Response:
    """CORS preflight: what a page on another origin may ask of a public URL."""
    return web.Response(status=204, headers=_PREFLIGHT)
