"""Conditional requests (RFC 9110 §13): which of 200/206, 304 and 412 a GET or HEAD gets.

The edge's validators are the record's strong ETag and its Last-Modified second; both come
from the token record, so a revalidation costs the same one Redis round trip as any request
and never touches S3.
"""

from __future__ import annotations

import calendar
import email.utils
import functools
import re
from dataclasses import dataclass
from enum import Enum

_ETAG = re.compile(r'\s*(W/)?("[^"]*")\s*(?:,|$)')


class Outcome(Enum):
    SEND = "send"  # 200, or 206 if a Range applies
    NOT_MODIFIED = "not_modified"  # 304
    PRECONDITION_FAILED = "precondition_failed"  # 412


@dataclass(slots=True)
class Conditions:
    """The request's conditional headers, as sent (None when absent)."""

    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None
    if_range: str | None = None


def http_date(ts: int) -> str:
    return email.utils.formatdate(ts, usegmt=True)


@functools.lru_cache(maxsize=256)
def parse_http_date(value: str) -> int | None:
    """Unix seconds of an HTTP-date (IMF-fixdate, RFC 850 or asctime), None if invalid.

    Browsers send back the Last-Modified they were given, so a small memo of recent values
    turns most revalidations into a cache hit.
    """
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return calendar.timegm(parsed[:6]) - (parsed[9] or 0)


def _tags(header: str) -> list[tuple[bool, str]] | None:
    """(weak, opaque tag) of each entity tag in a list; None for `*` or a malformed list."""
    out: list[tuple[bool, str]] = []
    pos = 0
    header = header.strip()
    while pos < len(header):
        m = _ETAG.match(header, pos)
        if m is None:
            return None
        out.append((m.group(1) is not None, m.group(2)))
        pos = m.end()
    return out


def _matches(header: str, etag: str, *, weak: bool) -> bool:
    if header == etag:  # the common case: one tag, exactly ours
        return True
    if header.strip() == "*":
        return True
    tags = _tags(header)
    if not tags:
        return False
    return any(tag == etag and (weak or not is_weak) for is_weak, tag in tags)


def evaluate(cond: Conditions, etag: str, last_modified: int) -> Outcome:
    """RFC 9110 §13.2.2 steps 1-4, for a GET or HEAD of an existing representation."""
    if cond.if_match is not None:
        if not _matches(cond.if_match, etag, weak=False):
            return Outcome.PRECONDITION_FAILED
    elif cond.if_unmodified_since is not None:
        ts = parse_http_date(cond.if_unmodified_since)
        if ts is not None and last_modified > ts:
            return Outcome.PRECONDITION_FAILED
    if cond.if_none_match is not None:
        if _matches(cond.if_none_match, etag, weak=True):
            return Outcome.NOT_MODIFIED
    elif cond.if_modified_since is not None:
        ts = parse_http_date(cond.if_modified_since)
        if ts is not None and last_modified <= ts:
            return Outcome.NOT_MODIFIED
    return Outcome.SEND


def range_applies(if_range: str | None, etag: str, last_modified: int) -> bool:
    """Whether a Range may be honoured given If-Range (step 5): else send the whole object."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return value == etag  # strong comparison; a weak tag never matches
    ts = parse_http_date(value)
    return ts is not None and ts == last_modified
