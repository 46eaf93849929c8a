"""The token cache: the Redis projection of live public URLs that the edge serves from.

One key per live token holding everything the edge needs, with a Redis TTL at the URL's
deadline so an expired URL disappears even if no job runs. PostgreSQL stays the source of
truth; the worker's reconcile rebuilds these entries from it.

Writers (API, worker) go through `TokenCache` while holding the file's row lock, so a
concurrent revoke can never be overtaken by a stale write (see `shared/public_urls.py`).
The edge reads an entry in one round trip (`cdn_edge/lookups.py`).

Where the entries live (TOKEN_REDIS_URL, TOKEN_REDIS_MODE):
- one Redis (the default: REDIS_URL's);
- a Redis Cluster: keys stay `filecdn:url:<token>` (no hash tag, so tokens spread over
  every shard); each write is per key, batches are pipelined per node, the edge's MGET is
  split per slot, and reconcile scans every primary;
- a primary whose replicas the edges read: every write then waits (`WAIT`) until
  TOKEN_REDIS_WAIT_REPLICAS replicas have it. When they do not confirm in time the write
  raises `TokenCacheError` (a `RedisError`: the API answers 503, the use case's transaction
  rolls back) and an entry it had set is deleted again, without waiting: dead is the safe
  state. A revoke that fails this way has already deleted the entry on the primary, so
  the URL stays dead while its row stays live, until the client retries or reconcile
  restores the entry from the row (the 503 meant "not revoked": the state agrees).

Records (`UrlRecord.encode`): 62 bytes of binary when the name, object key and type follow
from the file id and a type code (every record we write today), JSON otherwise. Edges
decode both, so old JSON entries keep serving until rewritten; upgrade edges first (an
older edge reads a binary record as corrupt: 404). Reconcile rewrites every entry that
differs from its row, old formats included.
"""

from __future__ import annotations

import json
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from shared import ids, sniff

log = structlog.get_logger(__name__)

KEY_PREFIX = "filecdn:url:"
# Set by each reconcile pass: gone means the token cache lost its data (restart, flush)
# and needs a pass now. Outside KEY_PREFIX, so scans of entries never see it.
EPOCH_KEY = "filecdn:url-epoch"

TokenRedis = aioredis.Redis | RedisCluster


def key(token: str) -> str:
    return KEY_PREFIX + token


# --- the record -------------------------------------------------------------------------

# Compact record: format byte, type code (| _HAS_DEADLINE), file uuid, the ETag's 16 bytes,
# size, last_modified (s), deadline (ms; 0 when none), version. Big-endian, 62 bytes.
_COMPACT = struct.Struct(">BB16s16sQqQI")
_COMPACT_FORMAT = 0x01  # a JSON record starts with "{" (0x7b)
_HAS_DEADLINE = 0x80
# Type codes are part of the stored format: append only, never renumber.
_TYPE_CODES = {sniff.PNG: 1, sniff.JPEG: 2, sniff.MP4: 3, sniff.PDF: 4}
_TYPES = {code: content_type for content_type, code in _TYPE_CODES.items()}
_ETAG = re.compile(r'"[0-9a-f]{32}"')
_FILE_ID = re.compile(r"file_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_FILE_PREFIX = "file_"


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
        """The compact form when every field fits it, JSON otherwise."""
        compact = self._compact()
        if compact is not None:
            return compact
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    def _compact(self) -> bytes | None:
        code = _TYPE_CODES.get(self.content_type)
        # Lower-case hex only (what we issue): anything else would not decode to itself.
        if code is None or not _FILE_ID.fullmatch(self.file_id) or not _ETAG.fullmatch(self.etag):
            return None
        if self.name != _name(self.file_id, self.content_type) or self.object_key != (
            ids.object_key(self.file_id)
        ):
            return None
        if self.deadline_ms is not None:
            code |= _HAS_DEADLINE
        try:
            return _COMPACT.pack(
                _COMPACT_FORMAT,
                code,
                bytes.fromhex(self.file_id[len(_FILE_PREFIX) :].replace("-", "")),
                bytes.fromhex(self.etag[1:-1]),
                self.size,
                self.last_modified,
                self.deadline_ms or 0,
                self.version,
            )
        except struct.error:  # a number out of the fields' range
            return None

    @classmethod
    def decode(cls, raw: bytes | str) -> UrlRecord:
        """Either form; ValueError (or TypeError/KeyError for bad JSON fields) if corrupt."""
        if isinstance(raw, bytes) and raw[:1] == bytes((_COMPACT_FORMAT,)):
            if len(raw) != _COMPACT.size:
                raise ValueError(f"compact record of {len(raw)} bytes")
            _, code, file_uuid, etag, size, modified, deadline, version = _COMPACT.unpack(raw)
            content_type = _TYPES.get(code & ~_HAS_DEADLINE)
            if content_type is None:
                raise ValueError(f"unknown type code {code}")
            file_id = _FILE_PREFIX + str(uuid.UUID(bytes=file_uuid))
            return cls(
                file_id=file_id,
                name=_name(file_id, content_type),
                object_key=ids.object_key(file_id),
                content_type=content_type,
                size=size,
                etag=f'"{etag.hex()}"',
                last_modified=modified,
                deadline_ms=deadline if code & _HAS_DEADLINE else None,
                version=version,
            )
        data: dict[str, Any] = json.loads(raw)
        return cls(**data)

    def live_at(self, now_ms: int) -> bool:
        return self.deadline_ms is None or now_ms < self.deadline_ms


def _name(file_id: str, content_type: str) -> str:
    return f"{file_id}.{sniff.PUBLIC_EXTENSIONS[content_type]}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- the cache --------------------------------------------------------------------------


class TokenCacheError(RedisError):
    """The token cache could not do, or could not confirm, a write (or a cluster failed).

    A `RedisError`, so the API answers 503 and the worker retries, as for any Redis failure.
    """


# KEYS: the entries; ARGV: per key its value (empty: delete) and deadline (0: none).
_WRITE_MANY = """
for i, key in ipairs(KEYS) do
  local value, pxat = ARGV[2 * i - 1], ARGV[2 * i]
  if value == '' then
    redis.call('DEL', key)
  elseif pxat == '0' then
    redis.call('SET', key, value)
  else
    redis.call('SET', key, value, 'PXAT', pxat)
  end
end
return #KEYS
"""


@dataclass(frozen=True, slots=True)
class _Write:
    key: str
    value: bytes | None  # None: delete
    pxat: int | None = None


class TokenCache:
    """Every write to the token cache goes through here (API, worker, reconcile).

    One place, because what a write must wait for is decided here: see the module's
    docstring for the topologies and what a write that replicas do not confirm does.
    """

    def __init__(
        self, redis: TokenRedis, *, wait_replicas: int = 0, wait_timeout: float = 1.0
    ) -> None:
        if wait_replicas and isinstance(redis, RedisCluster):
            raise ValueError("a cluster's token cache cannot wait for replicas")
        self.redis = redis
        self.wait_replicas = wait_replicas
        self._wait_ms = max(1, int(wait_timeout * 1000))

    async def put(self, token: str, record: UrlRecord) -> None:
        """Write (or overwrite) the entry, expiring at the deadline; a past one deletes it."""
        await self.put_many([(token, record)])

    async def put_many(self, entries: Sequence[tuple[str, UrlRecord]]) -> None:
        """`put` for each entry, pipelined (per node on a cluster), one WAIT for all."""
        now = now_ms()
        writes = []
        for token, record in entries:
            if record.deadline_ms is not None and record.deadline_ms <= now:
                writes.append(_Write(key(token), None))
            else:
                writes.append(_Write(key(token), record.encode(), record.deadline_ms))
        await self._write(writes)

    async def delete(self, *tokens: str) -> None:
        """Remove the entries: once this returns, the edge no longer serves these tokens."""
        await self._write([_Write(key(t), None) for t in tokens])

    async def get(self, token: str) -> UrlRecord | None:
        """The entry as stored (decoded), or None."""
        raw = await self._call(self.redis.get(key(token)))
        return None if raw is None else UrlRecord.decode(raw)

    async def restore(self, entries: Sequence[tuple[str, UrlRecord]]) -> int:
        """`put_many` for the entries whose stored bytes are not their records' (missing,
        another record format, other content): reconcile's rebuild, in one read and one
        pipelined write (per node on a cluster). Returns how many it wrote."""
        if not entries:
            return 0
        keys = [key(t) for t, _ in entries]
        stored = await self.mget(keys)
        now = now_ms()
        writes = []
        for k, (_, record), raw in zip(keys, entries, stored, strict=True):
            if record.deadline_ms is not None and record.deadline_ms <= now:
                if raw is not None:
                    writes.append(_Write(k, None))
                continue
            value = record.encode()
            if raw != value:
                writes.append(_Write(k, value, record.deadline_ms))
        await self._write(writes)
        return len(writes)

    async def present(self, tokens: Sequence[str]) -> list[bool]:
        """Which of the tokens have an entry, in one round trip (per node on a cluster)."""
        return [raw is not None for raw in await self.mget([key(t) for t in tokens])]

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        """Raw values of the keys; on a cluster, one MGET per slot, pipelined per node."""
        if isinstance(self.redis, RedisCluster):
            values = await self._call(self.redis.mget_nonatomic(keys))
        else:
            values = await self._call(self.redis.mget(keys))
        return list(values)

    async def tokens(self, batch: int) -> AsyncIterator[list[str]]:
        """Every token with an entry, in batches (SCAN of every primary on a cluster:
        entries may come and go meanwhile)."""
        found: list[str] = []
        try:
            async for raw in self.redis.scan_iter(match=KEY_PREFIX + "*", count=batch):
                found.append(raw.decode()[len(KEY_PREFIX) :])
                if len(found) >= batch:
                    yield found
                    found = []
        except RedisClusterException as exc:
            raise TokenCacheError(f"token cache cluster: {exc}") from exc
        if found:
            yield found

    async def was_emptied(self) -> bool:
        """Whether the cache lost its data since the last `mark_rebuilt` (on a cluster:
        the shard holding the mark did; a periodic pass covers the others)."""
        return not await self._call(self.redis.exists(EPOCH_KEY))

    async def mark_rebuilt(self) -> None:
        await self._call(self.redis.set(EPOCH_KEY, str(int(time.time()))))

    async def _call(self, pending: Any) -> Any:
        try:
            return await pending
        except RedisClusterException as exc:
            raise TokenCacheError(f"token cache cluster: {exc}") from exc

    async def _write(self, writes: Sequence[_Write]) -> None:
        if not writes:
            return
        pipe = self.redis.pipeline(transaction=False)
        if len(writes) > 1 and not isinstance(self.redis, RedisCluster):
            # Many keys on one server: one command, one reply (reconcile's batches).
            args: list[bytes | int] = []
            for w in writes:
                args += (w.value or b"", w.pxat or 0)
            pipe.execute_command("EVAL", _WRITE_MANY, len(writes), *(w.key for w in writes), *args)
        else:  # per key; a cluster pipeline sends each node its own
            for w in writes:
                if w.value is None:
                    pipe.delete(w.key)
                else:
                    pipe.set(w.key, w.value, pxat=w.pxat)
        if self.wait_replicas:
            # On the same connection, after the writes: WAIT counts the replicas that have
            # every write this connection made so far.
            pipe.execute_command("WAIT", self.wait_replicas, self._wait_ms)
        replies = await self._call(pipe.execute())
        if self.wait_replicas and replies[-1] < self.wait_replicas:
            await self._undo(writes)
            raise TokenCacheError(
                f"token cache: {replies[-1]} of {self.wait_replicas} replicas confirmed"
                f" {len(writes)} write(s) within {self._wait_ms} ms"
            )

    async def _undo(self, writes: Sequence[_Write]) -> None:
        """After replicas did not confirm: delete what was set, without waiting (dead is the
        safe state; replicas apply the delete after the set, whenever they catch up)."""
        doomed = [w.key for w in writes if w.value is not None]
        if not doomed:
            return  # deletes need no undo: the URL is dead on the primary, the safe side
        try:
            pipe = self.redis.pipeline(transaction=False)
            for k in doomed:
                pipe.delete(k)
            await self._call(pipe.execute())
        except RedisError as exc:
            log.warning("token cache: unconfirmed entries not deleted", error=str(exc))
