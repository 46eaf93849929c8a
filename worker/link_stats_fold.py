"""The per-link stats fold: the edges' counts in Redis, added to PostgreSQL exactly once.

The edges' side of the contract is `shared/link_stats.py`. Every LINK_STATS_FOLD_INTERVAL
each worker makes one pass:
1. claim: a script RENAMEs the pending hash to a unique folding key and registers that key
   in a sorted set (score: when), in one atomic step; increments arriving later start a new
   pending hash. A pending hash of up to PART_TOKENS tokens becomes a *part*; a bigger one
   (a backlog: the worker was down) becomes a *big* key (name ending `:big`).
2. split: a big key is never read for counting, only moved from: a script moves whole
   tokens' fields into a new part and registers it, atomically, PART_TOKENS at a time; what
   is left is renamed into a last part. So every field is always in exactly one registered
   key, and a part, once made, never changes.
3. fold: one transaction per part first inserts the part's name into `link_stats_folds`,
   then adds its counts to `public_urls` (hits, bytes_sent, last_accessed_at = the later
   one) and to `public_url_minutes` (the minute of the token's last access as the edge
   flushed it, `t:`; the fold's own minute when absent). A name already recorded adds
   nothing; a concurrent fold of the same part waits on that insert, then finds it.
4. finish: DEL the part and drop it from the registry.
Registered keys older than LEFTOVER_AGE_MS (their worker died, or its commit failed) are
taken up by whichever worker sees them first.

Why nothing is counted twice or lost (short of losing Redis's data):
- the claim and each move are single scripts: a crash leaves them done or not done;
- a crash after a part exists but before its commit (or a failed transaction) leaves a
  registered part that no commit has named: a later pass folds it once;
- a crash after the commit but before finishing leaves a registered part whose name is
  recorded: the next fold of it adds nothing and finishes it;
- parts are immutable and big keys are never read whole, so two workers on the same key
  at once (a split slower than LEFTOVER_AGE_MS) still move each field once and count each
  part once;
- `link_stats_folds` rows outlive any folding key: a key lives at most PENDING_TTL_SECONDS
  after its rename (it gets no more writes), and the rows are kept a day longer.
Counts for tokens with no row are dropped (logged at debug); a revoked or expired URL's row
still takes the late counts of what it served. Row locks are taken in id order, so two
workers folding at once never deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from shared import link_stats
from shared.db import Connection
from shared.resources import Resources
from worker.failures import log_failure

log = structlog.get_logger(__name__)

# The folding keys not yet finished, scored by when they were claimed (unix ms).
REGISTRY_KEY = "filecdn:linkstats:registry"
# A registered key this old is folded by any worker (its own worker would have been done).
LEFTOVER_AGE_MS = 10_000
LEFTOVERS_PER_PASS = 100
# One transaction adds at most this many tokens; a bigger folding key is split first.
PART_TOKENS = 5000
_SCAN_COUNT = 1000
BIG_SUFFIX = ":big"
# Fold records are kept this much longer than a folding key can live.
FOLD_RECORD_MARGIN_SECONDS = 24 * 3600

# KEYS: source, destination, registry; ARGV: the destination's score. The claim (pending ->
# a folding key) and the last step of a split (what is left of a big key -> a part).
_RENAME = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], KEYS[1])
  return 0
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[1], KEYS[2])
redis.call('ZREM', KEYS[3], KEYS[1])
return 1
"""
# KEYS: source, part, registry; ARGV: the part's score, then tokens. Moves each token's
# h:/b:/t: fields into a new part, registered in the same step.
_MOVE = """
local ttl = redis.call('PTTL', KEYS[1])
local moved = 0
for i = 2, #ARGV do
  for _, kind in ipairs({'h:', 'b:', 't:'}) do
    local field = kind .. ARGV[i]
    local value = redis.call('HGET', KEYS[1], field)
    if value then
      redis.call('HSET', KEYS[2], field, value)
      redis.call('HDEL', KEYS[1], field)
      moved = moved + 1
    end
  end
end
if moved > 0 then
  redis.call('ZADD', KEYS[3], ARGV[1], KEYS[2])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return moved
"""

_LOCK_ROWS = """
SELECT 1 FROM public_urls WHERE token = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE
"""
# Data-modifying CTEs run to completion whether read or not; the count is the tokens that
# had a row.
_ADD = """
WITH c AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[])
                  AS c (token, hits, bytes, last_at)
), u AS (
    UPDATE public_urls p
       SET hits = p.hits + c.hits,
           bytes_sent = p.bytes_sent + c.bytes,
           last_accessed_at = GREATEST(p.last_accessed_at, c.last_at)
      FROM c
     WHERE p.token = c.token
 RETURNING p.id, p.team_id, c.hits, c.bytes, c.last_at
), m AS (
    INSERT INTO public_url_minutes AS m (url_id, team_id, minute, hits, bytes)
    SELECT id, team_id, date_trunc('minute', coalesce(last_at, $5)), hits, bytes FROM u
     WHERE hits > 0 OR bytes > 0
        ON CONFLICT (url_id, minute)
        DO UPDATE SET hits = m.hits + EXCLUDED.hits, bytes = m.bytes + EXCLUDED.bytes
)
SELECT count(*) FROM u
"""


def folding_key(now_ms: int, *, big: bool = False) -> str:
    """Unique, and ordered by claim time (13 digits until 2286): the retention sweep deletes
    old fold records by a range of the primary key (a part's name starts with its key's)."""
    name = f"{link_stats.FOLDING_PREFIX}{now_ms:013d}-{uuid.uuid4().hex[:16]}"
    return f"{name}{BIG_SUFFIX}" if big else name


def is_big(key: str) -> bool:
    return key.endswith(BIG_SUFFIX)


def fold_records_before(cutoff_ms: int) -> str:
    """Every folding key claimed before `cutoff_ms` sorts below this."""
    return f"{link_stats.FOLDING_PREFIX}{cutoff_ms:013d}"


def fold_record_retention_seconds() -> int:
    return link_stats.PENDING_TTL_SECONDS + FOLD_RECORD_MARGIN_SECONDS


@dataclass
class FoldStats:
    keys: int = 0
    tokens: int = 0
    unknown_tokens: int = 0
    already_folded: int = 0

    def add(self, other: FoldStats) -> None:
        self.keys += other.keys
        self.tokens += other.tokens
        self.unknown_tokens += other.unknown_tokens
        self.already_folded += other.already_folded


def _at(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None  # not a time an edge wrote: the fold's minute stands in


class Folder:
    """One worker's folding: scripts registered once, passes run by `loop`."""

    def __init__(self, res: Resources, *, leftover_age_ms: int = LEFTOVER_AGE_MS) -> None:
        self.res = res
        self.leftover_age_ms = leftover_age_ms
        self._rename = res.redis.register_script(_RENAME)
        self._move = res.redis.register_script(_MOVE)

    async def fold_pass(self) -> FoldStats:
        """Claim what the edges have written, then fold it and any leftovers."""
        now_ms = int(time.time() * 1000)
        keys = []
        claimed = await self.claim(now_ms)
        if claimed is not None:
            keys.append(claimed)
        leftovers = await self.res.redis.zrangebyscore(
            REGISTRY_KEY, "-inf", now_ms - self.leftover_age_ms, start=0, num=LEFTOVERS_PER_PASS
        )
        keys += [k.decode() for k in leftovers if k.decode() != claimed]
        stats = FoldStats()
        for key in keys:
            stats.add(await self.fold_key(key))
        return stats

    async def claim(self, now_ms: int) -> str | None:
        """Rename the pending hash to a new registered folding key; None if nothing pending.

        Its size is read just before: a few more fields may arrive in between, so a part's
        bound is soft by one flush interval's worth."""
        size: int = await self.res.redis.hlen(link_stats.PENDING_KEY)  # type: ignore[misc]
        if not size:
            return None
        key = folding_key(now_ms, big=size > 3 * PART_TOKENS)
        moved = await self._rename(keys=[link_stats.PENDING_KEY, key, REGISTRY_KEY], args=[now_ms])
        return key if moved else None

    async def fold_key(self, key: str) -> FoldStats:
        """Fold one registered key: a part at once; a big key part by part."""
        if not is_big(key):
            return await self.fold_part(key)
        stats = FoldStats()
        for part in await self.split(key):
            stats.add(await self.fold_part(part))
        return stats

    async def fold_part(self, part: str) -> FoldStats:
        """Count a part once, then drop it."""
        stats = FoldStats()
        raw = {f: v async for f, v in self.res.redis.hscan_iter(part, count=_SCAN_COUNT)}
        if raw:
            stats = await self.commit(part, link_stats.parse(raw))
        await self.finish(part)
        return stats

    async def split(self, key: str) -> list[str]:
        """Move a big key's tokens into registered parts of PART_TOKENS, then what is left
        into a last part; returns the parts made here."""
        parts: list[str] = []
        tokens: list[str] = []
        # Parts may be folded by any worker at once: nobody owns them.
        score = int(time.time() * 1000) - self.leftover_age_ms

        async def move() -> None:
            part = f"{key}:part:{uuid.uuid4().hex[:16]}"
            if await self._move(keys=[key, part, REGISTRY_KEY], args=[score, *tokens]):
                parts.append(part)
            tokens.clear()

        async for field, _ in self.res.redis.hscan_iter(key, count=_SCAN_COUNT):
            kind, _, token = field.decode(errors="replace").partition(":")
            if kind == "h" and token:
                tokens.append(token)
                if len(tokens) >= PART_TOKENS:
                    await move()
        if tokens:
            await move()
        rest = f"{key}:part:{uuid.uuid4().hex[:16]}"
        if await self._rename(keys=[key, rest, REGISTRY_KEY], args=[score]):
            parts.append(rest)
        return parts

    async def commit(self, key: str, counts: Sequence[link_stats.Folded]) -> FoldStats:
        """Add one folding key's counts, once: the key's name is recorded first."""
        async with self.res.db.acquire() as conn, conn.transaction():
            first = await conn.fetchval(
                """INSERT INTO link_stats_folds (fold_key) VALUES ($1)
                   ON CONFLICT DO NOTHING RETURNING true""",
                key,
            )
            if not first:
                return FoldStats(keys=1, already_folded=1)
            matched = await self.add(conn, counts) if counts else 0
        unknown = len(counts) - matched
        if unknown:
            log.debug("link stats for unknown tokens dropped", tokens=unknown, fold_key=key)
        return FoldStats(keys=1, tokens=len(counts), unknown_tokens=unknown)

    async def add(self, conn: Connection, counts: Sequence[link_stats.Folded]) -> int:
        """Add counts to the URL rows and their minutes; returns the tokens that had a row."""
        ordered = sorted(counts, key=lambda c: c.token)
        tokens = [c.token for c in ordered]
        await conn.execute(_LOCK_ROWS, tokens)
        matched = await conn.fetchval(
            _ADD,
            tokens,
            [c.hits for c in ordered],
            [c.bytes for c in ordered],
            [_at(c.last_ms) for c in ordered],
            datetime.now(UTC),
        )
        return int(matched)

    async def finish(self, key: str) -> None:
        pipe = self.res.redis.pipeline(transaction=False)
        pipe.delete(key)
        pipe.zrem(REGISTRY_KEY, key)
        await pipe.execute()


def _no_beat() -> None:
    pass


async def loop(res: Resources, stop: asyncio.Event, beat: Callable[[], None] = _no_beat) -> None:
    """Fold every LINK_STATS_FOLD_INTERVAL until stopped; a failed pass is retried.
    `beat` is called every turn (the worker's heartbeat)."""
    folder = Folder(res)
    interval = res.settings.link_stats_fold_interval
    while not stop.is_set():
        beat()
        try:
            stats = await folder.fold_pass()
            if stats.keys:
                log.debug("link stats folded", **vars(stats))
        except Exception as exc:
            log_failure(log, "link stats fold", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
