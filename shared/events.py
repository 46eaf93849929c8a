"""The file-event stream: `file.deleted` events for the worker's consumer group.

Producers (API delete, file expiry) append after their transaction commits; the consumer
checks PostgreSQL before acting, so a stray or repeated event is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

STREAM = "filecdn:events"
GROUP = "filecdn-worker"
FILE_DELETED = "file.deleted"
_MAXLEN = 1_000_000  # approximate cap: acknowledged history is not needed forever


@dataclass(frozen=True, slots=True)
class FileEvent:
    type: str
    file_id: str
    object_key: str
    team_id: int
    reason: str

    def fields(self) -> dict[FieldT, EncodableT]:
        return {
            "type": self.type,
            "file_id": self.file_id,
            "object_key": self.object_key,
            "team_id": str(self.team_id),
            "reason": self.reason,
        }

    @classmethod
    def from_fields(cls, raw: dict[bytes, bytes]) -> FileEvent:
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(f["type"], f["file_id"], f["object_key"], int(f["team_id"]), f["reason"])


async def publish(redis: aioredis.Redis, event: FileEvent) -> str:
    entry_id = await redis.xadd(STREAM, event.fields(), maxlen=_MAXLEN, approximate=True)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
