"""The dashboard's charts, computed from a window's points (`shared.series.downsample`).

The server decides what each chart shows (title, unit, lines); the page only draws what
it is sent. Rates are per second over the time a point covers (less for the step under
way), lifecycle counts per minute, levels (`state.*`) as sampled (null where no sample).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from api.request_metrics import FIELD_PREFIX as API_PREFIX
from shared import series
from shared.series import Point

# The edge's latency buckets (milliseconds; `edge.latency_ms.le_<ms>` fields).
EDGE_LATENCY_BOUNDS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
# The worker's expiry-lag buckets (`worker.expiry.lag_ms.le_<ms>`), see worker/jobs.py.
EXPIRY_LAG_BOUNDS_MS = (100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)

LIFECYCLE = {
    "uploads": "files.uploaded",
    "URLs created": "url.created",
    "URLs updated": "url.updated",
    "URLs revoked": "url.revoked",
    "URLs expired": "url.expired",
    "files deleted": "files.deleted",
    "files expired": "files.expired",
}
_CACHE = {"memory": "edge.cache.memory_hits", "disk": "edge.cache.disk_hits"}
_CACHE_MISS = "edge.cache.misses"

Values = list[float | None]


def _line(points: Sequence[Point], value: Callable[[Point], float | None]) -> Values:
    return [None if (v := value(p)) is None else round(v, 4) for p in points]


def _per_second(name: str) -> Callable[[Point], float]:
    return lambda p: series.rate(p.values.get(name, 0), p.seconds)


def _per_minute(name: str) -> Callable[[Point], float]:
    return lambda p: series.rate(p.values.get(name, 0), p.seconds) * 60


def _level(name: str) -> Callable[[Point], float | None]:
    return lambda p: p.values.get(name) if p.sampled and name in p.values else None


def _quantile(
    q: float, prefix: str, bounds: Sequence[float], scale: float = 1.0
) -> Callable[[Point], float | None]:
    def value(p: Point) -> float | None:
        v = series.quantile(q, series.histogram(p.values, prefix, bounds))
        return None if v is None else v * scale

    return value


def _share(name: str) -> Callable[[Point], float | None]:
    def value(p: Point) -> float | None:
        whole = sum(p.values.get(n, 0) for n in (*_CACHE.values(), _CACHE_MISS))
        return series.ratio(p.values.get(name, 0), whole)

    return value


def _class_rate(prefix: str, cls: str) -> Callable[[Point], float]:
    return lambda p: series.rate(series.by_status_class(p.values, prefix).get(cls, 0), p.seconds)


def _api_routes(points: Sequence[Point]) -> dict[str, set[str]]:
    """Route -> the status classes it answered with in the window."""
    routes: dict[str, set[str]] = {}
    for p in points:
        for name in p.values:
            if name.startswith(API_PREFIX):
                cls, _, route = name[len(API_PREFIX) :].partition(".")
                routes.setdefault(route, set()).add(cls)
    return routes


def _api_route_rate(route: str, classes: Sequence[str], per: float) -> Callable[[Point], float]:
    names = [f"{API_PREFIX}{c}.{route}" for c in classes]
    return lambda p: series.rate(sum(p.values.get(n, 0) for n in names), p.seconds) * per


def chart(title: str, unit: str, lines: dict[str, Values], **extra: Any) -> dict[str, Any]:
    return {"title": title, "unit": unit, "lines": lines, **extra}


def charts(points: Sequence[Point]) -> dict[str, dict[str, Any]]:
    """Every chart of the dashboard, in the order the page shows them."""
    edge_classes = [
        c
        for c in (*series.STATUS_CLASSES, "other")
        if any(series.by_status_class(p.values, "edge.requests.").get(c) for p in points)
    ] or ["2xx"]
    routes = _api_routes(points)
    errors = sorted(
        (route, cls) for route, classes in routes.items() for cls in classes if cls >= "4xx"
    )
    lag_prefix = "worker.expiry.lag_ms."
    return {
        "edge_requests": chart(
            "Edge requests/s by status class",
            "req/s",
            {c: _line(points, _class_rate("edge.requests.", c)) for c in edge_classes},
            stacked=True,
        ),
        "edge_bytes": chart(
            "Edge bytes/s sent", "B/s", {"sent": _line(points, _per_second("edge.bytes"))}
        ),
        "edge_cache": chart(
            "Edge cache: where content came from",
            "share",
            {
                "memory": _line(points, _share(_CACHE["memory"])),
                "disk": _line(points, _share(_CACHE["disk"])),
                "miss (S3)": _line(points, _share(_CACHE_MISS)),
            },
            stacked=True,
        ),
        "edge_latency": chart(
            "Edge latency",
            "ms",
            {
                f"p{round(q * 100)}": _line(
                    points, _quantile(q, "edge.latency_ms.", EDGE_LATENCY_BOUNDS_MS)
                )
                for q in (0.5, 0.95, 0.99)
            },
        ),
        "origin": chart(
            "Origin (S3) reads",
            "B/s",
            {"bytes/s": _line(points, _per_second("edge.origin.bytes"))},
            y2={"requests/s": _line(points, _per_second("edge.origin.requests"))},
        ),
        "urls_active": chart(
            "Active public URLs", "URLs", {"active": _line(points, _level("state.urls.active"))}
        ),
        "api_requests": chart(
            "API requests/s by route",
            "req/s",
            {
                route: _line(points, _api_route_rate(route, sorted(classes), 1))
                for route, classes in sorted(routes.items())
            },
            wide=True,
        ),
        "api_errors": chart(
            "API errors/min by route",
            "per min",
            {
                f"{cls} {route}": _line(points, _api_route_rate(route, [cls], 60))
                for route, cls in errors
            },
            wide=True,
        ),
        "queue": chart(
            "Job queue (expiry jobs)",
            "jobs",
            {
                "queued": _line(points, _level("state.queue.depth")),
                "overdue": _line(points, _level("state.queue.overdue")),
            },
        ),
        "expiry_lag": chart(
            "Expiry lag: due → ran",
            "s",
            {
                f"p{round(q * 100)}": _line(
                    points, _quantile(q, lag_prefix, EXPIRY_LAG_BOUNDS_MS, 1 / 1000)
                )
                for q in (0.5, 0.95, 0.99)
            },
        ),
        "lifecycle": chart(
            "Files and URLs per minute",
            "per min",
            {label: _line(points, _per_minute(name)) for label, name in LIFECYCLE.items()},
            wide=True,
        ),
        "events": chart(
            "Event stream (file.deleted)",
            "events",
            {"pending": _line(points, _level("state.events.pending"))},
            y2={"oldest pending (s)": _line(points, _level("state.events.oldest_pending_s"))},
        ),
    }


def window_totals(points: Sequence[Point]) -> dict[str, Any]:
    """The window's totals, as `GET /api/summary` shapes them (without live state)."""
    t = series.totals({p.start: p.values for p in points if p.values})
    seconds = sum(p.seconds for p in points)
    edge = series.by_status_class(t, "edge.requests.")
    edge_requests = sum(edge.values())
    api: dict[str, int] = {}
    for name, v in t.items():
        if name.startswith(API_PREFIX):
            cls = name[len(API_PREFIX) :].partition(".")[0]
            api[cls] = api.get(cls, 0) + v
    cache = {
        "memory": t.get(_CACHE["memory"], 0),
        "disk": t.get(_CACHE["disk"], 0),
        "miss": t.get(_CACHE_MISS, 0),
    }
    served = sum(cache.values())
    latency = series.histogram(t, "edge.latency_ms.", EDGE_LATENCY_BOUNDS_MS)
    lag = series.histogram(t, "worker.expiry.lag_ms.", EXPIRY_LAG_BOUNDS_MS)

    def q(v: float | None, scale: float = 1.0) -> float | None:
        return None if v is None else round(v * scale, 3)

    return {
        "edge": {
            "requests": edge_requests,
            "requests_per_second": round(series.rate(edge_requests, seconds), 3),
            "by_class": edge,
            "errors_5xx": edge.get("5xx", 0),
            "error_ratio_5xx": q(series.ratio(edge.get("5xx", 0), edge_requests)),
            "bytes": t.get("edge.bytes", 0),
            "cache": cache,
            "hit_ratio": q(series.ratio(cache["memory"] + cache["disk"], served)),
            "latency_ms": {
                f"p{round(x * 100)}": q(series.quantile(x, latency)) for x in (0.5, 0.95, 0.99)
            },
            "origin": {
                "requests": t.get("edge.origin.requests", 0),
                "bytes": t.get("edge.origin.bytes", 0),
            },
        },
        "api": {
            "requests": sum(api.values()),
            "client_errors": api.get("4xx", 0),
            "errors": api.get("5xx", 0),
        },
        "files": {
            "uploaded": t.get("files.uploaded", 0),
            "deleted": t.get("files.deleted", 0),
            "expired": t.get("files.expired", 0),
        },
        "urls": {
            "created": t.get("url.created", 0),
            "updated": t.get("url.updated", 0),
            "revoked": t.get("url.revoked", 0),
            "expired": t.get("url.expired", 0),
        },
        "worker": {
            "expiry_jobs": t.get("worker.expiry.runs", 0),
            "expiry_lag_seconds": {
                f"p{round(x * 100)}": q(series.quantile(x, lag), 1 / 1000) for x in (0.5, 0.95)
            },
            "reconcile_runs": t.get("worker.reconcile.runs", 0),
            "reconcile_failures": t.get("worker.reconcile.failures", 0),
        },
    }
