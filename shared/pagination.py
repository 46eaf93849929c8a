"""Listing: the list query, its page size, and opaque, tamper-evident cursors.

A cursor carries the last row's sort key and id, plus a digest of the query (sort, order,
filter, purpose); it is signed with PAGINATION_SECRET so that a client can neither forge
a position nor reuse a cursor with another query. Pure: the caller supplies the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeGuard, get_args

from shared.errors import InvalidArgument

# The contract's page size: the default `limit` (REST without one, gRPC's 0) and the
# default cap (LIST_LIMIT_MAX).
DEFAULT_PAGE_SIZE = 100

SortBy = Literal["created_at", "filename", "size"]
Order = Literal["asc", "desc"]
_SIG_BYTES = 16


def is_order(value: str) -> TypeGuard[Order]:
    """True for a valid list order; lets a transport hand a checked string to `ListQuery`."""
    return value in get_args(Order)


def is_sort_by(value: str) -> TypeGuard[SortBy]:
    """True for a valid sort key."""
    return value in get_args(SortBy)


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int = DEFAULT_PAGE_SIZE
    order: Order = "desc"
    sort_by: SortBy = "created_at"
    filter: str | None = None
    purpose: str | None = None
    pagination_token: str | None = None
    after: str | None = None  # a file id (the openai SDK's cursor)

    def digest(self) -> str:
        """What a cursor is bound to: every part of the query but the position and size."""
        return query_digest(self.sort_by, self.order, self.filter, self.purpose)


def page_size(q: ListQuery, limit_max: int) -> int:
    """The rows one page returns: `limit` clamped to `limit_max`; below 1 is an error.

    `order` and `sort_by` are checked again here for callers that build a ListQuery from
    unchecked strings (the transports check them first, with their own wording).
    """
    limit = clamp_limit(q.limit, limit_max)
    if not is_order(q.order):
        raise InvalidArgument(f"order must be asc or desc, got {q.order!r}")
    if not is_sort_by(q.sort_by):
        raise InvalidArgument(
            f"sort_by must be one of created_at, filename, size, got {q.sort_by!r}"
        )
    return limit


def clamp_limit(limit: int, limit_max: int) -> int:
    """A page's size as every list answers it: below 1 is an error, above the cap clamped."""
    if limit < 1:
        raise InvalidArgument("limit must be at least 1")
    return min(limit, limit_max)


@dataclass(frozen=True, slots=True)
class Cursor:
    sort_value: datetime | str | int
    file_id: str


def query_digest(*parts: str | None) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update((p or "").encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(secret: bytes, digest: str, cursor: Cursor) -> str:
    value: Any = cursor.sort_value
    kind = "t" if isinstance(value, datetime) else "i" if isinstance(value, int) else "s"
    if isinstance(value, datetime):
        value = value.isoformat()
    body = _b64(json.dumps([digest, kind, value, cursor.file_id], separators=(",", ":")).encode())
    sig = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest()[:_SIG_BYTES])
    return f"{body}.{sig}"


def decode(secret: bytes, digest: str, token: str) -> Cursor:
    bad = InvalidArgument("invalid pagination_token: not a token this server issued")
    body, _, sig = token.partition(".")
    try:
        expected = hmac.new(secret, body.encode(), hashlib.sha256).digest()[:_SIG_BYTES]
        if not hmac.compare_digest(_unb64(sig), expected):
            raise bad
        token_digest, kind, value, file_id = json.loads(_unb64(body))
    except (ValueError, TypeError) as exc:
        raise bad from exc
    if token_digest != digest:
        raise InvalidArgument(
            "invalid pagination_token: it belongs to a different query "
            "(sort_by, order, filter and purpose must stay the same)"
        )
    if kind == "t":
        value = datetime.fromisoformat(value)
    return Cursor(value, file_id)
