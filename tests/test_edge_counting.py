"""How the edge counts, without a server: the per-process counter slot, its Prometheus text,
the per-minute bucket fields, the bounded per-link counts, and what a report does when Redis
fails (counted as dropped, never lost silently)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from cdn_edge import metrics as m
from cdn_edge.links import LinkCounts
from cdn_edge.reports import Reporter, bucket_fields
from shared import link_stats


def counters() -> m.Counters:
    return m.Counters(m.private_slot())


def record(
    c: m.Counters, status: int, sent: int = 0, cache: str | None = None, ms: float = 0
) -> None:
    c.record(status, sent, cache, time.perf_counter_ns() - int(ms * 1e6))


def parsed(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    }


def test_a_request_counts_its_status_bytes_source_and_latency() -> None:
    c = counters()
    record(c, 200, 100, "memory", ms=3)
    record(c, 206, 10, "disk", ms=30)
    record(c, 404)
    record(c, 418)  # not one of ours: counted as "other", labels stay bounded
    a = c.counters()
    assert a[m.REQUESTS + m.STATUSES.index(200)] == 1
    assert a[m.OTHER_STATUS] == 1
    assert a[m.SENT_BYTES] == 110
    assert a[m.CACHE_INDEX["memory"]] == 1 and a[m.CACHE_INDEX["disk"]] == 1
    assert sum(a[m.LATENCY : m.LATENCY + len(m.BOUNDS_S) + 1]) == 4
    assert a[m.LATENCY + m.BOUNDS_S.index(0.005)] == 1  # 3 ms: in (2 ms, 5 ms]
    assert a[m.LATENCY_SUM_NS] >= 33_000_000


def test_prometheus_text_sums_every_slot_and_the_dead() -> None:
    one, two = counters(), counters()
    record(one, 200, 100, "memory", ms=1.5)
    record(two, 200, 50, "miss", ms=300)
    two.slot[m.MEMORY_CACHE_BYTES] = 7
    two.slot[m.DISK_CACHE_BYTES] = 1000
    one.slot[m.DISK_CACHE_BYTES] = 900  # the same directory: the larger estimate wins
    one.slot[m.SERVING] = two.slot[m.SERVING] = 1
    gone = [0] * m.COUNTERS
    gone[m.REQUESTS] = 5  # five 200s counted by a worker that died
    total = list(gone)
    for slot in (one, two):
        m.add_into(total, slot.slot)
    s = parsed(m.prometheus(total, [one.slot, two.slot]))
    assert s[("filecdn_edge_requests_total", (("status", "200"),))] == 7
    assert s[("filecdn_edge_response_bytes_total", ())] == 150
    assert s[("filecdn_edge_cache_requests_total", (("source", "miss"),))] == 1
    assert s[("filecdn_edge_request_duration_seconds_bucket", (("le", "0.002"),))] == 1
    assert s[("filecdn_edge_request_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert s[("filecdn_edge_request_duration_seconds_count", ())] == 2
    assert 0.3 < s[("filecdn_edge_request_duration_seconds_sum", ())] < 1
    assert s[("filecdn_edge_memory_cache_bytes", ())] == 7
    assert s[("filecdn_edge_disk_cache_bytes", ())] == 1000
    assert s[("filecdn_edge_workers", ())] == 2


def test_bucket_fields_keep_the_redis_names_with_cumulative_latency() -> None:
    c = counters()
    record(c, 200, 100, "memory", ms=3)
    record(c, 200, 100, "miss", ms=30)
    c.slot[m.ORIGIN_REQUESTS] += 1
    c.slot[m.ORIGIN_BYTES] += 100
    fields = bucket_fields(c.counters())
    assert fields == {
        "edge.requests.200": 2,
        "edge.bytes": 200,
        "edge.cache.memory_hits": 1,
        "edge.cache.misses": 1,
        "edge.origin.requests": 1,
        "edge.origin.bytes": 100,
        "edge.latency_ms.le_5": 1,
        "edge.latency_ms.le_10": 1,
        "edge.latency_ms.le_25": 1,
        "edge.latency_ms.le_50": 2,
        "edge.latency_ms.le_100": 2,
        "edge.latency_ms.le_250": 2,
        "edge.latency_ms.le_500": 2,
        "edge.latency_ms.le_1000": 2,
        "edge.latency_ms.le_inf": 2,
    }


def test_link_counts_set_aside_a_full_map_and_merge_on_take() -> None:
    woken: list[int] = []
    links = LinkCounts(counters(), max_tokens=2, on_full=lambda: woken.append(1))
    links.add("a", 10)
    links.add("b", 20)
    links.add("a", 1)
    assert woken == []
    links.add("c", 5)  # a third token: the full map waits for an early report
    links.add("a", 100)
    assert woken == [1] and len(links) == 4
    taken = links.take()
    assert {t: (c.hits, c.bytes) for t, c in taken.items()} == {
        "a": (3, 111),
        "b": (1, 20),
        "c": (1, 5),
    }
    assert links.take() == {} and len(links) == 0


def test_link_counts_beyond_the_bound_are_dropped_and_counted() -> None:
    c = counters()
    links = LinkCounts(c, max_tokens=1, on_full=lambda: None)
    for i in range(10):  # nobody takes: Redis cannot keep up
        links.add(f"t{i}", 1)
        links.add(f"t{i}", 1)
    assert len(links) <= 4  # three maps set aside and the current one, one token each
    assert c.slot[m.LINKS_DROPPED] == 2 * 10 - 2 * len(links)
    assert sum(x.hits for x in links.take().values()) + c.slot[m.LINKS_DROPPED] == 20


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis, self.calls = redis, []

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **kw: self.calls.append((name, a, kw))

    async def execute(self) -> list[Any]:
        if self.redis.down:
            raise RedisConnectionError("Connection refused")
        self.redis.executed.append(self.calls)
        return []


class FakeRedis:
    """Just enough of a client for a report: pipelines that work or fail."""

    def __init__(self) -> None:
        self.down = False
        self.executed: list[list[tuple[str, tuple[Any, ...], dict[str, Any]]]] = []

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)


def increments(calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> dict[str, int]:
    return {a[1]: a[2] for name, a, _ in calls if name == "hincrby"}


async def test_a_report_sends_counters_and_link_counts_in_one_pipeline() -> None:
    redis, c = FakeRedis(), counters()
    links = LinkCounts(c, 100, lambda: None)
    reporter = Reporter(
        redis,  # type: ignore[arg-type]
        c,
        metrics=True,
        links=links,
        retention=60,
        timeout=1,
        gauges=lambda: None,
        wake=asyncio.Event(),
    )
    record(c, 200, 100, "memory")
    links.add("tok", 100)
    await reporter.report()
    [calls] = redis.executed
    fields = increments(calls)
    assert fields["edge.requests.200"] == 1
    assert fields["h:tok"] == 1 and fields["b:tok"] == 100
    assert any(name == "hset" and a[0] == link_stats.PENDING_KEY for name, a, _ in calls)
    await reporter.report()  # nothing new: no round trip
    assert len(redis.executed) == 1

    redis.down = True  # two reports fail: their requests and hits are counted as dropped
    for _ in range(2):
        record(c, 200, 100, "memory")
        links.add("tok", 100)
        await reporter.report()
    assert c.slot[m.METRICS_DROPPED] == 2 and c.slot[m.LINKS_DROPPED] == 2
    redis.down = False
    record(c, 404)
    await reporter.report()
    fields = increments(redis.executed[-1])
    assert fields["edge.metrics.dropped"] == 2 and fields["edge.links.dropped"] == 2
    assert fields["edge.requests.404"] == 1 and "edge.requests.200" not in fields
