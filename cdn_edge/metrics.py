"""Edge counters: one flat array of 64-bit integers per process, and their Prometheus text.

Each edge process counts into its own slot of an array the supervisor shares with it (a
private array when it runs alone). Counting a request is a handful of integer increments;
nothing is locked, because one process writes a slot and aligned 64-bit stores are atomic,
so a reader sees every counter as it was at some instant, each one never going backwards.

The supervisor's ops listener sums every slot, plus what workers that died had counted
(kept when it reaps them), so the instance's counters never go backwards, even across a
restart. The same array is where each process finds what to add to the per-minute Redis
buckets once a second (`cdn_edge.reports`): the difference from what it reported last.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Sequence

# Status codes the edge answers with (any other counts as "other": labels stay bounded).
STATUSES = (200, 204, 206, 304, 404, 405, 412, 416, 499, 500, 502, 503, 504)
# Latency buckets' upper bounds: seconds for Prometheus, milliseconds in Redis field names.
BOUNDS_S = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BOUNDS_MS = tuple(round(b * 1000) for b in BOUNDS_S)
_BOUNDS_NS = tuple(round(b * 1e9) for b in BOUNDS_S)
CACHE_SOURCES = ("memory", "disk", "miss")


class _Layout:
    """Indices into a process's slot: counters first (summed across restarts), then gauges."""

    def __init__(self) -> None:
        self.size = 0

    def take(self, n: int = 1) -> int:
        first, self.size = self.size, self.size + n
        return first


_l = _Layout()
REQUESTS = _l.take(len(STATUSES) + 1)  # one per status, then "other"
OTHER_STATUS = REQUESTS + len(STATUSES)
SENT_BYTES = _l.take()  # body bytes sent
CACHE = _l.take(len(CACHE_SOURCES))  # responses with content, by where the bytes came from
LATENCY = _l.take(len(BOUNDS_S) + 1)  # per bucket, not cumulative; the last is +Inf
LATENCY_SUM_NS = _l.take()
ORIGIN_REQUESTS = _l.take()  # GETs sent to S3
ORIGIN_BYTES = _l.take()  # body bytes received from S3
METRICS_DROPPED = _l.take()  # requests whose per-minute counts Redis did not take
LINKS_DROPPED = _l.take()  # GET hits whose per-link counts Redis did not take
COUNTERS = _l.size
MEMORY_CACHE_BYTES = _l.take()
MEMORY_CACHE_OBJECTS = _l.take()
DISK_CACHE_BYTES = _l.take()  # this process's estimate of the shared directory
DISK_CACHE_FILLS = _l.take()
SERVING = _l.take()  # 1 while the process accepts connections
SLOT = _l.size

_STATUS_INDEX = {status: REQUESTS + i for i, status in enumerate(STATUSES)}
CACHE_INDEX = {source: CACHE + i for i, source in enumerate(CACHE_SOURCES)}


def private_slot() -> memoryview:
    """A slot for a process that runs alone (no supervisor reads it)."""
    return memoryview(bytearray(SLOT * 8)).cast("q")


class Counters:
    """One process's counters and gauges, in its slot."""

    __slots__ = ("slot",)

    def __init__(self, slot: memoryview) -> None:
        if slot.format != "q" or len(slot) != SLOT:
            raise ValueError(f"a counters slot is {SLOT} int64s")
        self.slot = slot

    def record(self, status: int, sent: int, cache: str | None, started_ns: int) -> None:
        """Count one finished request (the hot path: a few integer increments).

        `cache` is "memory", "disk" or "miss" when content was sent; `started_ns` is the
        request's `time.perf_counter_ns()`.
        """
        a = self.slot
        a[_STATUS_INDEX.get(status, OTHER_STATUS)] += 1
        if sent:
            a[SENT_BYTES] += sent
        if cache is not None:
            a[CACHE_INDEX[cache]] += 1
        ns = time.perf_counter_ns() - started_ns
        a[LATENCY_SUM_NS] += ns
        a[LATENCY + bisect.bisect_left(_BOUNDS_NS, ns)] += 1

    def counters(self) -> list[int]:
        return self.slot[:COUNTERS].tolist()

    def clear(self) -> None:
        self.slot[:] = private_slot()


def disk_cache_limit(limit_bytes: int) -> tuple[str, str, str, float]:
    """The disk cache's bound as an extra gauge line (what "near full" is measured against)."""
    return (
        "filecdn_edge_disk_cache_limit_bytes",
        "gauge",
        "The disk cache's bound (EDGE_DISK_CACHE_BYTES)",
        limit_bytes,
    )


def add_into(total: list[int], slot: Sequence[int]) -> None:
    for i in range(COUNTERS):
        total[i] += slot[i]


# --- Prometheus text -------------------------------------------------------------------------


def prometheus(
    counters: Sequence[int],
    live: Iterable[Sequence[int]],
    extra: Iterable[tuple[str, str, str, float]] = (),
) -> bytes:
    """The instance's metrics in Prometheus text format (version 0.0.4).

    `counters` are summed over every process, living or gone; `live` are the slots of the
    processes running now (their gauges); `extra` adds (name, type, help, value) lines.
    """
    slots = list(live)
    lines: list[str] = []

    def family(name: str, kind: str, help_: str) -> Callable[[str, float], None]:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        return lambda labels, v: lines.append(f"{name}{labels} {v}")

    requests = family("filecdn_edge_requests_total", "counter", "Requests answered, by status code")
    for i, status in enumerate((*STATUSES, "other")):
        requests(f'{{status="{status}"}}', counters[REQUESTS + i])
    family("filecdn_edge_response_bytes_total", "counter", "Body bytes sent to clients")(
        "", counters[SENT_BYTES]
    )
    cache = family(
        "filecdn_edge_cache_requests_total",
        "counter",
        "Responses with content, by where the bytes came from (memory, disk, or S3: miss)",
    )
    for i, source in enumerate(CACHE_SOURCES):
        cache(f'{{source="{source}"}}', counters[CACHE + i])
    hist = family(
        "filecdn_edge_request_duration_seconds",
        "histogram",
        "Time from the request's arrival to its last byte handed to the kernel",
    )
    running = 0
    for i, bound in enumerate((*BOUNDS_S, "+Inf")):
        running += counters[LATENCY + i]
        hist(f'_bucket{{le="{bound}"}}', running)
    hist("_sum", counters[LATENCY_SUM_NS] / 1e9)
    hist("_count", running)
    family("filecdn_edge_origin_requests_total", "counter", "GET requests sent to S3")(
        "", counters[ORIGIN_REQUESTS]
    )
    family("filecdn_edge_origin_bytes_total", "counter", "Body bytes read from S3")(
        "", counters[ORIGIN_BYTES]
    )
    family(
        "filecdn_edge_metrics_dropped_total",
        "counter",
        "Requests whose per-minute counts could not be written to Redis",
    )("", counters[METRICS_DROPPED])
    family(
        "filecdn_edge_link_stats_dropped_total",
        "counter",
        "GET hits whose per-link counts could not be written to Redis",
    )("", counters[LINKS_DROPPED])
    gauges: tuple[tuple[str, int, Callable[[list[int]], int], str], ...] = (
        ("memory_cache_bytes", MEMORY_CACHE_BYTES, sum, "Bytes in the memory caches"),
        ("memory_cache_objects", MEMORY_CACHE_OBJECTS, sum, "Objects in the memory caches"),
        ("disk_cache_bytes", DISK_CACHE_BYTES, max, "Bytes in the disk cache (estimate)"),
        ("disk_cache_fills", DISK_CACHE_FILLS, sum, "Disk cache fills under way"),
        ("workers", SERVING, sum, "Processes accepting connections"),
    )
    for name, index, combine, help_ in gauges:
        family(f"filecdn_edge_{name}", "gauge", help_)("", combine([0, *(s[index] for s in slots)]))
    for name, kind, help_, value in extra:
        family(name, kind, help_)("", value)
    return ("\n".join(lines) + "\n").encode()
