"""The token cache: the Redis projection of live public URLs that the edge serves from.

One key per live token holding everything the edge needs, with a Redis TTL at the URL's
deadline so an expired URL disappears even if no job runs. PostgreSQL stays the source of
truth; the worker's reconcile rebuilds these entries from it.

Writers (API, worker) call `put`/`delete` while holding the file's row lock, so a
concurrent revoke can never be overtaken by a stale write (see `shared/public_urls.py`).
The reader (`lookup`) is the edge's one Redis round trip per request.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

KEY_PREFIX = "filecdn:url:"


def key(token: str) -> str:
    return KEY_PREFIX + token


@dataclass(frozen=True, slots=True)
class UrlRecord:
    """What the edge needs to serve one public URL, without touching PostgreSQL."""

    file_id: str
    name: str  # the last path segment the URL must carry: "<file_id>.<ext>"
    object_key: str
    content_type: str
    size: int
    etag: str  # strong validator, quoted as sent in the ETag header
    last_modified: int  # Unix seconds (the file's created_at)
    deadline_ms: int | None  # Unix milliseconds; None = no deadline
    version: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> UrlRecord:
        data: dict[str, Any] = json.loads(raw)
        return cls(**data)

    def live_at(self, now_ms: int) -> bool:
        return self.deadline_ms is None or now_ms < self.deadline_ms


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def put(redis: aioredis.Redis, token: str, record: UrlRecord) -> None:
    """Write (or overwrite) the entry, expiring at the deadline. A past deadline deletes it."""
    if record.deadline_ms is None:
        await redis.set(key(token), record.encode())
    elif record.deadline_ms <= now_ms():
        await redis.delete(key(token))
    else:
        await redis.set(key(token), record.encode(), pxat=record.deadline_ms)


async def delete(redis: aioredis.Redis, *tokens: str) -> None:
    if tokens:
        await redis.delete(*(key(t) for t in tokens))


async def lookup(redis: aioredis.Redis, token: str) -> UrlRecord | None:
    """The record if the token is live now, else None (unknown, revoked, expired)."""
    raw = await redis.get(key(token))
    if raw is None:
        return None
    record = UrlRecord.decode(raw)
    return record if record.live_at(now_ms()) else None
