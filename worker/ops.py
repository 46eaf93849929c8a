"""The worker's private ops listener (OPS_HOST:WORKER_OPS_PORT): `/metrics` (this process's
Prometheus registry) and `/healthz`, a heartbeat of this process's own loops.

Kubernetes restarts a worker whose `/healthz` fails, so it must fail exactly when this
process is stuck: arq's poll loop, the event consumer, the reconcile loop or the link-stats
fold has not come round for WORKER_STALL_SECONDS. Each loop beats once per turn (and per
batch inside a long reconcile pass), including turns that failed because a dependency is
down: a restart would not bring PostgreSQL, Redis or S3 back, so an outage is not a reason
to fail. arq's own health key is per queue (any replica refreshes it), so it cannot say this.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import prometheus_client
from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared import metrics
from shared.settings import Settings

LOOPS = ("jobs", "events", "reconcile", "links")


class Heartbeat(Collector):
    """The last beat of each loop of this process (monotonic), and its Prometheus gauge."""

    def __init__(self, stall_after: float) -> None:
        self.stall_after = stall_after
        now = time.monotonic()
        self._last = dict.fromkeys(LOOPS, now)

    def beat(self, loop: str) -> None:
        self._last[loop] = time.monotonic()

    def ages(self) -> dict[str, float]:
        now = time.monotonic()
        return {loop: round(now - last, 3) for loop, last in self._last.items()}

    def stalled(self) -> list[str]:
        return [loop for loop, age in self.ages().items() if age > self.stall_after]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "filecdn_worker_loop_beat_age_seconds",
            "Seconds since each loop of this worker last came round",
            labels=["loop"],
        )
        for loop, age in self.ages().items():
            family.add_metric([loop], age)
        yield family


HEARTBEAT = web.AppKey("heartbeat", Heartbeat)
REGISTRY = web.AppKey("registry", prometheus_client.CollectorRegistry)


async def healthz(request: web.Request) -> web.Response:
    heartbeat = request.app[HEARTBEAT]
    stalled = heartbeat.stalled()
    return web.json_response(
        {
            "status": "stalled" if stalled else "ok",
            "stalled": stalled,
            "seconds_since_beat": heartbeat.ages(),
            "stall_after_seconds": heartbeat.stall_after,
        },
        status=503 if stalled else 200,
        headers={"Cache-Control": "no-store"},
    )


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(
        body=metrics.prometheus_text(request.app[REGISTRY]), headers=metrics.PROMETHEUS_HEADERS
    )


def ops_app(heartbeat: Heartbeat) -> web.Application:
    app = web.Application()
    app[HEARTBEAT] = heartbeat
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(heartbeat)
    app[REGISTRY] = registry
    app.router.add_routes([web.get("/metrics", prometheus), web.get("/healthz", healthz)])
    return app


async def start(settings: Settings, heartbeat: Heartbeat) -> web.AppRunner:
    """Listen on OPS_HOST:WORKER_OPS_PORT; the caller cleans the runner up."""
    runner = web.AppRunner(ops_app(heartbeat), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.ops_host, settings.worker_ops_port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


def probe_url(settings: Settings) -> str:
    """Where `filecdn worker --check` asks this machine's worker (a wildcard address
    listens on loopback too)."""
    host = settings.ops_host if settings.ops_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.worker_ops_port}/healthz"
