"""Response heads, built once and reused: per token record, and per error status.

A record's header block (type, validators, disposition, CORS, caching) only depends on the
record's bytes, so it is rendered the first time those exact bytes come back from Redis and
reused after that. This memoises rendering, not authorisation: the bytes still come from
Redis on every request, and the deadline is still compared with the clock every time.
"""

from __future__ import annotations

import re

from cdn_edge.conditional import http_date
from cdn_edge.http import REASONS
from shared.disposition import content_disposition
from shared.token_cache import UrlRecord

_MAX_VIEWS = 8192
_VISIBLE = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_ETAG = re.compile(r'"[\x21\x23-\x7e]*"')

# Headers a script on another origin may read: what a player or downloader needs.
_EXPOSE = "Accept-Ranges, Content-Disposition, Content-Length, Content-Range, ETag, Last-Modified"
_CORS = f"Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: {_EXPOSE}\r\n"
_SAFETY = "X-Content-Type-Options: nosniff\r\nCross-Origin-Resource-Policy: cross-origin\r\n"
_REQUEST_HEADERS = "Range, If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, If-Range"

ALLOW = "GET, HEAD"


def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {REASONS[status]}\r\n".encode()


class RecordView:
    """A decoded record with its response heads rendered."""

    __slots__ = ("common", "head_200", "head_304", "record")

    def __init__(self, record: UrlRecord, cache_control: str) -> None:
        for value in (record.content_type, record.name, record.object_key):
            if not _VISIBLE.fullmatch(value):
                raise ValueError("record field is not a header-safe string")
        if not _ETAG.fullmatch(record.etag):
            raise ValueError("record etag is not a quoted entity tag")
        self.record = record
        validators = (
            f"ETag: {record.etag}\r\n"
            f"Last-Modified: {http_date(record.last_modified)}\r\n"
            f"Cache-Control: {cache_control}\r\n"
        )
        self.common = (
            f"Content-Type: {record.content_type}\r\n"
            f"{validators}"
            "Accept-Ranges: bytes\r\n"
            f"Content-Disposition: {content_disposition('inline', record.name)}\r\n"
            f"{_SAFETY}{_CORS}"
        ).encode()
        self.head_200 = (
            status_line(200) + self.common + f"Content-Length: {record.size}\r\n".encode()
        )
        # RFC 9110 §15.4.5: a 304 carries the validators and caching fields, not metadata.
        self.head_304 = status_line(304) + f"{validators}{_SAFETY}{_CORS}".encode()

    def head_206(self, first: int, last: int) -> bytes:
        size = self.record.size
        return b"%s%sContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n" % (
            _206,
            self.common,
            first,
            last,
            size,
            last - first + 1,
        )

    def head_416(self) -> bytes:
        return (
            status_line(416)
            + f"Content-Range: bytes */{self.record.size}\r\nContent-Length: 0\r\n".encode()
            + f"Cache-Control: no-store\r\n{_SAFETY}{_CORS}".encode()
        )

    def head_412(self) -> bytes:
        return status_line(412) + f"Content-Length: 0\r\nCache-Control: no-store\r\n{_CORS}".encode()


_206 = status_line(206)


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
            except (TypeError, KeyError, AttributeError) as exc:
                raise ValueError(f"undecodable token record: {exc}") from exc
            view = RecordView(record, self._cache_control)
            if len(self._views) >= _MAX_VIEWS:
                self._views.clear()  # cheaper than LRU upkeep on every hit; refilled at once
            self._views[raw] = view
        return view


_ERROR_BODY = {status: f"{REASONS[status]}\n".encode() for status in REASONS if status >= 400}


def error_body(status: int) -> bytes:
    return _ERROR_BODY[status]


def _error_head(status: int) -> bytes:
    extra = ""
    if status == 405:
        extra = f"Allow: {ALLOW}\r\n"
    elif status == 503:
        extra = "Retry-After: 1\r\n"
    return (
        status_line(status)
        + (
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(_ERROR_BODY[status])}\r\n"
            f"Cache-Control: no-store\r\n{extra}{_SAFETY}{_CORS}"
        ).encode()
    )


_ERROR_HEAD = {status: _error_head(status) for status in _ERROR_BODY}


def error_head(status: int) -> bytes:
    """The one head for each error status: every 404 is byte-identical to every other."""
    return _ERROR_HEAD[status]


PREFLIGHT = status_line(204) + (
    f"Allow: {ALLOW}\r\n"
    "Access-Control-Allow-Origin: *\r\n"
    f"Access-Control-Allow-Methods: {ALLOW}\r\n"
    f"Access-Control-Allow-Headers: {_REQUEST_HEADERS}\r\n"
    f"Access-Control-Expose-Headers: {_EXPOSE}\r\n"
    "Access-Control-Max-Age: 86400\r\n"
    "Cache-Control: no-store\r\n"
).encode()
