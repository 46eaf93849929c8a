"""The edge's private ops listener (EDGE_OPS_PORT): Prometheus metrics summed over the
instance's workers and never going backwards (also across a worker that dies), origin
counters, readiness, and nothing operational left on the public port."""

from __future__ import annotations

import itertools
import os
import re
import signal
from urllib.parse import urlsplit

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cdn_edge.metrics import STATUSES
from cli.embedded import free_port
from cli.stack import filecdn_argv
from shared import metrics as buckets
from shared.resources import Resources
from tests.conftest import Stack
from tests.helpers import (
    OwnRedis,
    Samples,
    edge_workers,
    get,
    mp4,
    own_edge,
    png,
    sample,
    scrape,
    share,
    until,
)

COUNTERS = re.compile(r"_total$|_bucket$|_count$|_sum$")


def counters(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if COUNTERS.search(k[0])}


def never_backwards(before: Samples, after: Samples) -> list[str]:
    return [f"{k}: {v} -> {after.get(k)}" for k, v in before.items() if after.get(k, -1) < v]


async def test_the_public_port_serves_health_but_no_metrics(stack: Stack) -> None:
    status, _, _ = await get(stack.edge_url + "/metrics")
    assert status == 404
    status, _, body = await get(stack.edge_url + "/healthz")
    assert status == 200 and b"ok" in body


async def test_metrics_are_monotonic_across_10_scrapes_with_2_workers(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    p = await share(api, png(3000))
    scrapes: list[Samples] = []
    async with aiohttp.ClientSession() as s:
        for _ in range(10):
            for _ in range(20):  # new connections: both workers take some
                async with s.get(p.url, headers={"Connection": "close"}) as r:
                    assert r.status == 200
            scrapes.append(counters(await scrape(stack.edge_ops_url)))
    for before, after in itertools.pairwise(scrapes):
        assert not never_backwards(before, after)
    ok = [sample(x, "filecdn_edge_requests_total", status="200") for x in scrapes]
    # Every scrape sees every worker: each one counts all 20 requests made before it.
    assert all(b - a >= 20 for a, b in itertools.pairwise(ok)), ok
    assert sample(await scrape(stack.edge_ops_url), "filecdn_edge_workers") == 2


async def test_a_dead_workers_counts_are_kept_when_it_is_replaced(
    stack: Stack, api: aiohttp.ClientSession
) -> None:
    p = await share(api, png(3000))
    with own_edge(stack, workers=2) as edge:
        await until(lambda: len(edge_workers(edge)) == 2, "two listening workers")
        async with aiohttp.ClientSession() as s:
            for _ in range(40):
                async with s.get(edge.public(p), headers={"Connection": "close"}) as r:
                    assert r.status == 200
        before = counters(await scrape(edge.ops_url))
        assert sample(before, "filecdn_edge_requests_total", status="200") == 40
        victim = edge_workers(edge)[0]
        os.kill(victim, signal.SIGKILL)
        await until(
            lambda: len(edge_workers(edge)) == 2 and victim not in edge_workers(edge),
            "a replacement worker",
        )
        after = await scrape(edge.ops_url)
        assert not never_backwards(before, counters(after))
        # Counting happens in shared memory: not one of the dead worker's requests is lost.
        assert sample(after, "filecdn_edge_requests_total", status="200") == 40
        assert sample(after, "filecdn_edge_worker_restarts_total") == 1
        async with aiohttp.ClientSession() as s, s.get(edge.public(p)) as r:
            assert r.status == 200
        await until(lambda: _ok_requests(edge.ops_url, 41), "the new worker's request in the total")


async def _ok_requests(ops_url: str, n: int) -> bool:
    return sample(await scrape(ops_url), "filecdn_edge_requests_total", status="200") == n


async def test_metric_names_and_labels_follow_prometheus_conventions(stack: Stack) -> None:
    async with aiohttp.ClientSession() as s, s.get(stack.edge_ops_url + "/metrics") as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for family in families.values():
        assert family.name.startswith("filecdn_edge_"), family.name
        assert family.documentation, family.name
        if family.type == "counter":  # the parser strips `_total` from a counter's name
            assert all(x.name.endswith(("_total", "_created")) for x in family.samples)
    duration = families["filecdn_edge_request_duration_seconds"]
    assert duration.type == "histogram"
    bounds = [x.labels["le"] for x in duration.samples if x.name.endswith("_bucket")]
    assert bounds[0] == "0.001" and bounds[-1] == "+Inf"  # seconds, not milliseconds
    statuses = {x.labels["status"] for x in families["filecdn_edge_requests"].samples}
    assert statuses == {*map(str, STATUSES), "other"}  # bounded, whatever clients do
    assert not any("_ms" in name for name in families)
    limit = families["filecdn_edge_disk_cache_limit_bytes"].samples[0].value
    assert limit == stack.settings.edge_disk_cache_bytes  # what "near full" is measured against


async def test_origin_reads_are_counted_in_prometheus_and_in_the_minute_buckets(
    stack: Stack, api: aiohttp.ClientSession, res: Resources, own_redis: OwnRedis
) -> None:
    small, big = await share(api, png(3000)), await share(api, mp4(1024 * 1024), "b.mp4")
    for p in (small, big):
        await own_redis.copy_token(res, p.token)
    with own_edge(stack, REDIS_URL=own_redis.url, EDGE_DISK_CACHE_BYTES="0") as edge:
        for _ in range(3):  # the small one is read from S3 once, then from memory
            assert (await get(edge.public(small)))[2] == small.data
        assert (await get(edge.public(big)))[2] == big.data  # streamed from S3 each time
        status, _, body = await get(edge.public(big), Range="bytes=0-9999")
        assert status == 206 and len(body) == 10_000
        expected_bytes = 3000 + 1024 * 1024 + 10_000
        samples = await scrape(edge.ops_url)
        assert sample(samples, "filecdn_edge_origin_requests_total") == 3
        assert sample(samples, "filecdn_edge_origin_bytes_total") == expected_bytes

        async def in_buckets() -> bool:
            total: dict[str, int] = {}
            for fields in (await buckets.read(own_redis.client, minutes=2)).values():
                for k, v in fields.items():
                    total[k] = total.get(k, 0) + v
            return (
                total.get("edge.origin.requests") == 3
                and total.get("edge.origin.bytes") == expected_bytes
            )

        await until(in_buckets, "edge.origin.* in the per-minute buckets")


async def test_readiness_follows_redis_and_is_cached(stack: Stack, own_redis: OwnRedis) -> None:
    with own_edge(stack, workers=1, REDIS_URL=own_redis.url, EDGE_REDIS_TIMEOUT="1") as edge:
        status, _, body = await get(edge.ops_url + "/readyz")
        assert status == 200 and b'"redis": "ok"' in body
        commands = await _pings(own_redis)
        for _ in range(20):  # probes in a burst cost one PING, not twenty
            assert (await get(edge.ops_url + "/readyz"))[0] == 200
        assert await _pings(own_redis) - commands <= 2
        own_redis.stop()
        await until(lambda: _status(edge.ops_url + "/readyz", 503), "not ready without Redis", 10)
        status, _, body = await get(edge.ops_url + "/readyz")
        assert b"redis" in body and b"unreachable" in body
        assert (await get(edge.ops_url + "/healthz"))[0] == 200  # alive all the same
        own_redis.start()
        await until(lambda: _status(edge.ops_url + "/readyz", 200), "ready again", 15)


async def _pings(r: OwnRedis) -> int:
    stats = await r.client.info("commandstats")
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


async def _status(url: str, status: int) -> bool:
    return (await get(url))[0] == status


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_taken_ops_port_stops_the_edge_with_an_error(stack: Stack, workers: int) -> None:
    port = urlsplit(stack.edge_ops_url).port
    name = f"edge-taken-{workers}"
    env = {**stack.env, "EDGE_PORT": str(free_port()), "EDGE_OPS_PORT": str(port)}
    proc = stack.sup.start(name, filecdn_argv("edge", "--workers", str(workers)), env=env)
    try:
        await until(lambda: proc.poll() is not None, "the edge to exit", 30)
        assert proc.returncode == 1
        log = (stack.data_dir / "logs" / f"{name}.log").read_text()
        assert "cannot listen" in log and "Traceback" not in log
    finally:
        stack.sup.stop(name)
