"""Opaque, tamper-evident list cursors, bound to the query that made them.

A cursor carries the last row's sort key and id, plus a digest of the query (sort, order,
filter, purpose); it is signed with PAGINATION_SECRET so that a client can neither forge
a position nor reuse a cursor with another query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.errors import InvalidArgument
from shared.settings import Settings

_SIG_BYTES = 16
# Without PAGINATION_SECRET, cursors are valid only on the process that issued them; the
# API logs a warning at startup, and `filecdn run` always sets one.
_FALLBACK_SECRET = os.urandom(32)


def secret(settings: Settings) -> bytes:
    if settings.pagination_secret is None:
        return _FALLBACK_SECRET
    return settings.pagination_secret.get_secret_value().encode()


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
