"""Cache eviction on file deletion: every edge process tails the `filecdn:events` stream.

A plain XREAD (not the worker's consumer group: each process must see every event), starting
from the stream's end when the process starts and resuming from the last entry seen after a
Redis outage, so deletions made meanwhile still evict. Eviction frees space; it is not what
stops a deleted file from being served: its token is gone from Redis before the delete
answers, and every request checks its token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import structlog

from shared.events import FILE_DELETED, STREAM, FileEvent

log = structlog.get_logger(__name__)

_BATCH = 256
_RETRY_MIN, _RETRY_MAX = 0.2, 5.0


async def _stream_end(redis: aioredis.Redis) -> str:
    last = await redis.xrevrange(STREAM, count=1)
    if not last:
        return "0-0"
    entry_id = last[0][0]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def tail_deletions(
    redis: aioredis.Redis, on_deleted: Callable[[str], Awaitable[None]], block_ms: int
) -> None:
    """Call `on_deleted(object_key)` for every `file.deleted` event, until cancelled.

    `block_ms` must stay under the client's socket timeout, or every idle wait would end
    in a timeout error instead of an empty reply.
    """
    last: str | None = None
    retry = _RETRY_MIN
    while True:
        try:
            if last is None:
                last = await _stream_end(redis)
            reply = await redis.xread({STREAM: last}, count=_BATCH, block=block_ms)
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    try:
                        event = FileEvent.from_fields(fields)
                    except (KeyError, ValueError, UnicodeDecodeError):
                        log.warning("malformed file event ignored", entry=last)
                        continue
                    if event.type == FILE_DELETED:
                        await on_deleted(event.object_key)
            retry = _RETRY_MIN
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis down or slow: keep trying, never crash the edge
            log.warning("event stream unavailable; retrying", error=str(exc), retry_in=retry)
            await asyncio.sleep(retry)
            retry = min(retry * 2, _RETRY_MAX)
