"""Per-link counts: hits and body bytes per token, held in memory until the next report.

Counted after the response, never on the authorisation path: only GETs answered 200 or 206
count (not HEAD, 304 or errors). Memory is bounded: when an interval has seen `max_tokens`
distinct tokens, the counts are set aside for an early report and a new map starts. If
Redis cannot keep up and `_MAX_SET_ASIDE` maps are waiting, the oldest is dropped and its
hits are counted as dropped (`filecdn_edge_link_stats_dropped_total`): never silently.
The pending hash's format is `shared.link_stats`'s contract.
"""

from __future__ import annotations

from collections.abc import Callable

from cdn_edge.metrics import LINKS_DROPPED, Counters
from shared.link_stats import LinkCount

MAX_TOKENS = 10_000  # distinct tokens per map (a few MiB at most)
_MAX_SET_ASIDE = 3  # full maps waiting for Redis, beyond the one being filled


class LinkCounts:
    def __init__(self, counters: Counters, max_tokens: int, on_full: Callable[[], None]) -> None:
        self._counters = counters
        self._max_tokens = max_tokens
        self._on_full = on_full
        self._counts: dict[str, LinkCount] = {}
        self._set_aside: list[dict[str, LinkCount]] = []

    def add(self, token: str, sent: int) -> None:
        """One GET answered 200 or 206 with `sent` body bytes."""
        count = self._counts.get(token)
        if count is None:
            if len(self._counts) >= self._max_tokens:
                self._set_aside_full()
            count = self._counts[token] = LinkCount()
        count.hits += 1
        count.bytes += sent

    def _set_aside_full(self) -> None:
        self._set_aside.append(self._counts)
        self._counts = {}
        if len(self._set_aside) > _MAX_SET_ASIDE:
            lost = self._set_aside.pop(0)
            self._counters.slot[LINKS_DROPPED] += sum(c.hits for c in lost.values())
        self._on_full()

    def take(self) -> dict[str, LinkCount]:
        """Everything counted since the last take (the caller reports it or counts it lost)."""
        maps, self._set_aside, current = self._set_aside, [], self._counts
        self._counts = {}
        if not maps:
            return current
        merged: dict[str, LinkCount] = {}
        for counts in (*maps, current):
            for token, c in counts.items():
                m = merged.get(token)
                if m is None:
                    merged[token] = c
                else:
                    m.hits += c.hits
                    m.bytes += c.bytes
        return merged

    def __len__(self) -> int:
        return len(self._counts) + sum(len(m) for m in self._set_aside)
