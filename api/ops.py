"""The API process's private ops listener (OPS_HOST:OPS_PORT): the dashboard, its JSON,
Prometheus and the probes. Never on the serving ports.

- `GET /` and `/static/...`: the dashboard page (no data in it; it asks `/api/` with the
  operator token it keeps in sessionStorage).
- `GET /api/...`: JSON for the dashboard and scripts, with `Authorization: Bearer <ops
  token>` (`shared/ops_tokens.py`): none or an unknown one gets 401, a team's API key 403,
  in the REST API's error shape.
- `GET /metrics`: this process's Prometheus registry (REST and gRPC requests, domain
  events) plus gauges of shared state read at scrape time (queue, stream, URLs, quota,
  reconcile, dependencies). Every replica reports the same state: aggregate with max().
- `GET /healthz` (alive), `GET /readyz` (PostgreSQL, Redis, S3; cached, `api/health.py`).

Charts come from the per-minute Redis buckets: minutes that are over no longer change, so
their merged points are kept here and only the recent ones are read again on a refresh.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import prometheus_client
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api import health, ops_charts
from api.auth import bearer_key
from api.dashboard_assets import Assets
from api.errors import error_response, rest_response
from shared import metrics, ops_state, ops_tokens, series
from shared.errors import FilecdnError, InvalidArgument
from shared.resources import Resources
from shared.series import Point, Window

log = structlog.get_logger(__name__)

MAX_MINUTES = 10080  # what the buckets keep by default (7 days)
SETTLED_AFTER = 120  # seconds after a minute ends before its bucket is taken as final
GAUGES_FOR = 10.0  # seconds the state gauges are reused between scrapes


class PointCache:
    """Merged points of a window's steps, kept once their minutes are settled."""

    def __init__(self) -> None:
        self._settled: dict[tuple[int, int], Point] = {}

    async def points(self, res: Resources, window: Window, now: float) -> list[Point]:
        current = int(now) // window.step * window.step
        starts = [current - window.step * i for i in range(window.points - 1, -1, -1)]
        missing = [s for s in starts if (window.step, s) not in self._settled]
        this_minute = int(now) // 60 * 60
        minutes = [m for s in missing for m in range(s, min(s + window.step, this_minute + 60), 60)]
        buckets = await metrics.read_minutes(res.redis, minutes)
        wanted = set(missing)
        fresh = {p.start: p for p in series.downsample(buckets, window, now) if p.start in wanted}
        for s, p in fresh.items():
            if s + window.step <= now - SETTLED_AFTER:
                self._settled[(window.step, s)] = p
        horizon = now - MAX_MINUTES * 60 - 3600
        for key in [k for k in self._settled if k[1] < horizon]:
            del self._settled[key]
        return [self._settled.get((window.step, s)) or fresh[s] for s in starts]


def _summary_window(minutes: int) -> Window:
    """Up to a day: minute points; beyond, whole hours (cheap to keep)."""
    if minutes <= 1440:
        return Window(f"{minutes}m", minutes, 60)
    return Window(f"{minutes}m", -(-minutes // 60) * 60, 3600)


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, got {raw[:20]!r}") from None
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {value}")
    return value


class StateGauges(Collector):
    """Shared state as Prometheus gauges, refreshed at scrape time (at most every
    GAUGES_FOR seconds). A family that could not be read is left out of the scrape."""

    def __init__(self, res: Resources, readiness: health.Readiness) -> None:
        self._res = res
        self._readiness = readiness
        self._families: list[Metric] = []
        self._at = 0.0

    def collect(self) -> Iterator[Metric]:
        yield from self._families

    async def refresh(self) -> None:
        if time.monotonic() - self._at < GAUGES_FOR:
            return
        self._at = time.monotonic()
        res = self._res
        out: list[Metric] = []

        def gauge(name: str, help_: str, value: float | None) -> None:
            if value is not None:
                out.append(GaugeMetricFamily(name, help_, value=value))

        ready = await self._readiness.result()
        up = GaugeMetricFamily(
            "filecdn_dependency_up",
            "Whether PostgreSQL, Redis and S3 answered the last readiness check",
            labels=["dependency"],
        )
        for name, check in ready.checks.items():
            up.add_metric([name], 1.0 if check.ok else 0.0)
        out.append(up)
        gauge(
            "filecdn_public_url_quota",
            "Live public URLs a team may have",
            res.settings.public_url_quota,
        )
        try:
            q = await ops_state.queue(res.redis, res.settings.arq_queue_name)
            gauge("filecdn_jobs_queued", "Jobs in the queue, deferred ones included", q.depth)
            gauge("filecdn_jobs_overdue", "Jobs whose time has come", q.overdue)
            gauge(
                "filecdn_jobs_overdue_seconds",
                "How late the most overdue job is (0 when none is)",
                q.oldest_overdue_seconds,
            )
            s = await ops_state.stream(res.redis)
            gauge("filecdn_events_pending", "Events delivered but not acknowledged", s.pending)
            gauge(
                "filecdn_events_pending_oldest_seconds",
                "Age of the oldest pending event (0 when none is)",
                s.oldest_pending_seconds or 0.0,
            )
            gauge("filecdn_events_undelivered", "Events no consumer has read yet", s.undelivered)
            last = await ops_state.last_reconcile(res.redis)
            gauge(
                "filecdn_reconcile_last_success_timestamp_seconds",
                "When a reconcile pass last succeeded (any worker)",
                (last or {}).get("last_ok_at"),
            )
        except Exception as exc:  # Redis away: its gauges go missing, dependency_up says why
            log.warning("state gauges: Redis not read", error=str(exc))
        try:
            active = await ops_state.active_urls(res.db)
            gauge("filecdn_public_urls_active", "Live public URLs in all teams", active)
            top = await ops_state.teams_nearest_quota(res.db, res.settings.public_url_quota, 1)
            gauge(
                "filecdn_public_url_quota_max_usage_ratio",
                "The largest share of its quota any team uses (0..1)",
                (top[0].ratio if top else 0.0),
            )
        except Exception as exc:
            log.warning("state gauges: PostgreSQL not read", error=str(exc))
        self._families = out


class Ops:
    """What the ops listener's handlers share: resources, readiness, caches, assets."""

    def __init__(self, res: Resources) -> None:
        self.res = res
        self.readiness = health.Readiness(res)
        self.points = PointCache()
        self.assets = Assets()
        self.registry = prometheus_client.CollectorRegistry(auto_describe=False)
        self.gauges = StateGauges(res, self.readiness)
        self.registry.register(self.gauges)


OPS = web.AppKey("ops", Ops)


def _ops(request: web.Request) -> Ops:
    return request.app[OPS]


@web.middleware
async def api_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`/api/`: the operator token first; errors in the REST API's JSON shape."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    try:
        await ops_tokens.authenticate(
            _ops(request).res.db, bearer_key(request.headers.get("Authorization"))
        )
        return await handler(request)
    except FilecdnError as exc:
        return rest_response(exc)
    except web.HTTPNotFound:
        return error_response(404, "NOT_FOUND", f"no such endpoint: {request.path}")
    except web.HTTPMethodNotAllowed:
        return error_response(405, "UNIMPLEMENTED", f"method {request.method} not allowed here")
    except Exception as exc:  # Redis or PostgreSQL down: 503; a bug: a logged 500
        return rest_response(exc)


async def prometheus(request: web.Request) -> web.Response:
    ops = _ops(request)
    await ops.gauges.refresh()
    return web.Response(
        body=metrics.prometheus_text(ops.registry), headers=metrics.PROMETHEUS_HEADERS
    )


def _json(body: Any) -> web.Response:
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def summary(request: web.Request) -> web.Response:
    ops = _ops(request)
    minutes = _int_param(request, "minutes", 15, 1, MAX_MINUTES)
    now = time.time()
    points = await ops.points.points(ops.res, _summary_window(minutes), now)
    body = ops_charts.window_totals(points)
    body["urls"]["active"] = await ops_state.active_urls(ops.res.db)
    return _json(
        {
            "minutes": minutes,
            "from": datetime.fromtimestamp(points[0].start, UTC).isoformat(),
            "to": datetime.fromtimestamp(now, UTC).isoformat(),
            **body,
        }
    )


async def chart_series(request: web.Request) -> web.Response:
    ops = _ops(request)
    name = request.query.get("window", "1h")
    window = series.WINDOWS.get(name)
    if window is None:
        raise InvalidArgument(
            f"window must be one of {', '.join(series.WINDOWS)}, got {name[:20]!r}"
        )
    now = time.time()
    points = await ops.points.points(ops.res, window, now)
    totals = ops_charts.window_totals(points)
    totals["urls"]["active"] = await ops_state.active_urls(ops.res.db)
    return _json(
        {
            "window": window.name,
            "step_seconds": window.step,
            "t": [p.start * 1000 for p in points],
            "charts": ops_charts.charts(points),
            "totals": totals,
            "generated_at": round(now, 3),
        }
    )


async def health_report(request: web.Request) -> web.Response:
    result = await _ops(request).readiness.result()
    return _json(
        {
            "status": "ok" if result.ok else "unavailable",
            "checked_at": round(result.at, 3),
            "checks": {
                name: {"ok": c.ok, "ms": c.ms, "error": c.error}
                for name, c in result.checks.items()
            },
        }
    )


async def worker_report(request: web.Request) -> web.Response:
    res = _ops(request).res
    return _json(
        {
            "queue": ops_state.as_json(
                await ops_state.queue(res.redis, res.settings.arq_queue_name)
            ),
            "events": ops_state.as_json(await ops_state.stream(res.redis)),
            "reconcile": await ops_state.last_reconcile(res.redis),
            "reconcile_interval_seconds": res.settings.reconcile_interval,
        }
    )


async def urls_report(request: web.Request) -> web.Response:
    res = _ops(request).res
    minutes = _int_param(request, "minutes", 60, 1, MAX_MINUTES)
    limit = _int_param(request, "limit", 10, 1, 100)
    since = datetime.now(UTC) - timedelta(minutes=minutes)
    quota = res.settings.public_url_quota
    return _json(
        {
            "minutes": minutes,
            "active": await ops_state.active_urls(res.db),
            "quota": quota,
            "teams": ops_state.as_json(await ops_state.teams_nearest_quota(res.db, quota, limit)),
            "top_links": ops_state.as_json(await ops_state.top_links(res.db, since, limit)),
        }
    )


def build_ops_app(res: Resources) -> web.Application:
    ops = Ops(res)
    app = web.Application(middlewares=[api_guard])
    app[OPS] = ops
    app[health.READINESS] = ops.readiness
    app.router.add_routes(
        [
            web.get("/", ops.assets.index),
            web.get("/static/{version}/{name}", ops.assets.static),
            web.get("/metrics", prometheus),
            web.get("/healthz", health.healthz),
            web.get("/readyz", health.readyz),
            web.get("/api/summary", summary),
            web.get("/api/series", chart_series),
            web.get("/api/health", health_report),
            web.get("/api/worker", worker_report),
            web.get("/api/urls", urls_report),
        ]
    )
    return app
