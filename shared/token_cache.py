"""The token cache: the Redis projection of live public URLs that the edge serves from.

One key per live token holding everything the edge needs, with a Redis TTL at the URL's
deadline so an expired URL disappears even if no job runs. PostgreSQL stays the source of
truth; the worker's reconcile rebuilds these entries from it.

Writers (API, worker) go through `TokenCache` while holding the file's row lock, so a
concurrent revoke can never be overtaken by a stale write (see `shared/public_urls.py`).
The edge reads an entry in one round trip (`cdn_edge/lookups.py`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
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


class TokenCache:
    """Every write to the token cache goes through here (API, worker, reconcile).

    One place, because what a write must wait for is decided here: the token cache may
    move to its own Redis (TOKEN_REDIS_URL), and a revocation may have to wait for that
    Redis's replicas before the API answers.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def put(self, token: str, record: UrlRecord) -> None:
        """Write (or overwrite) the entry, expiring at the deadline; a past one deletes it."""
        if record.deadline_ms is None:
            await self.redis.set(key(token), record.encode())
        elif record.deadline_ms <= now_ms():
            await self.redis.delete(key(token))
        else:
            await self.redis.set(key(token), record.encode(), pxat=record.deadline_ms)

    async def delete(self, *tokens: str) -> None:
        """Remove the entries: once this returns, the edge no longer serves these tokens."""
        if tokens:
            await self.redis.delete(*(key(t) for t in tokens))

    async def present(self, tokens: Sequence[str]) -> list[bool]:
        """Which of the tokens have an entry, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for t in tokens:
            pipe.exists(key(t))
        return [bool(n) for n in await pipe.execute()]

    async def tokens(self, batch: int) -> AsyncIterator[list[str]]:
        """Every token with an entry, in batches (SCAN: entries may come and go meanwhile)."""
        found: list[str] = []
        async for raw in self.redis.scan_iter(match=KEY_PREFIX + "*", count=batch):
            found.append(raw.decode()[len(KEY_PREFIX) :])
            if len(found) >= batch:
                yield found
                found = []
        if found:
            yield found
