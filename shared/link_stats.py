"""Per-link counters: hits and bytes per public URL, from the edges to PostgreSQL.

The contract between the two sides (nothing here is on the edge's authorisation path):
- Each edge process counts GET requests answered 200 or 206 per token in memory, and once
  a second adds them to one pending hash on the main Redis (REDIS_URL, not the token
  cache's): `HINCRBY filecdn:linkstats:pending h:<token> <hits>` and `b:<token> <bytes>`,
  plus `HSET t:<token> <unix ms of the flush>` (last access, to within a second).
- The worker folds: it RENAMEs the pending hash to `filecdn:linkstats:folding:<unique>`
  (atomic: increments that arrive later start a new pending hash), adds the counts to
  PostgreSQL in one transaction that also records the folding key's name (so a retry after
  a crash never adds twice), then deletes the folding key. Leftover folding keys (a worker
  that died between rename and delete) are folded on the next pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio.client import Pipeline

PENDING_KEY = "filecdn:linkstats:pending"
FOLDING_PREFIX = "filecdn:linkstats:folding:"
# Unfolded counts are kept this long at most (no worker running): a bound, not a promise.
PENDING_TTL_SECONDS = 7 * 24 * 3600


@dataclass(slots=True)
class LinkCount:
    hits: int = 0
    bytes: int = 0


def add_to_pipeline(pipe: Pipeline, counts: Mapping[str, LinkCount], now_ms: int) -> None:
    """Queue one flush of per-token counts on a pipeline the caller executes."""
    if not counts:
        return
    for token, c in counts.items():
        pipe.hincrby(PENDING_KEY, f"h:{token}", c.hits)
        if c.bytes:
            pipe.hincrby(PENDING_KEY, f"b:{token}", c.bytes)
    pipe.hset(PENDING_KEY, mapping={f"t:{token}": now_ms for token in counts})
    pipe.expire(PENDING_KEY, PENDING_TTL_SECONDS)


@dataclass(frozen=True, slots=True)
class Folded:
    """One token's counts in a folding hash."""

    token: str
    hits: int
    bytes: int
    last_ms: int | None


def parse(raw: Mapping[bytes, bytes]) -> list[Folded]:
    """A folding hash's fields grouped by token; malformed fields are skipped."""
    by_token: dict[str, list[int | None]] = {}
    for field, value in raw.items():
        try:
            kind, _, token = field.decode().partition(":")
            n = int(value)
        except (UnicodeDecodeError, ValueError):
            continue
        if kind not in ("h", "b", "t") or not token:
            continue
        slot = by_token.setdefault(token, [0, 0, None])
        slot["hbt".index(kind)] = n
    return [Folded(t, int(v[0] or 0), int(v[1] or 0), v[2]) for t, v in by_token.items()]
