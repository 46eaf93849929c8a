"""API requests, counted twice: in Prometheus (this process, for scrapes and alerts) and in
the per-minute Redis buckets (every replica summed, for the dashboard).

Labels stay bounded: REST routes are their templates (`/v1/files/{file_id}`), never paths,
unknown methods are `other`; gRPC methods are the service's seven. The Redis fields are
`api.requests.<status class>.<method> <route>`, e.g. `api.requests.2xx.POST /v1/files` and
`api.requests.4xx.gRPC UploadFile`, counted in memory and written once a second.
"""

from __future__ import annotations

import grpc
from prometheus_client import Counter, Histogram

from shared.metrics import Tally
from shared.series import status_class

FIELD_PREFIX = "api.requests."
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# What each gRPC status means in HTTP terms, for one status-class vocabulary on the charts.
_GRPC_AS_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

REST_REQUESTS = Counter(
    "filecdn_api_requests_total",
    "REST requests answered, by method, route template and status code",
    ["method", "route", "status"],
)
REST_DURATION = Histogram(
    "filecdn_api_request_duration_seconds",
    "REST request time, from arrival to the handler's answer",
    ["method", "route"],
)
GRPC_REQUESTS = Counter(
    "filecdn_grpc_requests_total",
    "gRPC calls finished, by method and status code",
    ["method", "code"],
)
GRPC_DURATION = Histogram(
    "filecdn_grpc_request_duration_seconds", "gRPC call time, by method", ["method"]
)


def bounded_method(method: str) -> str:
    return method if method in _METHODS else "other"


class RequestCounter:
    """Counts finished requests; `tally` (None: Prometheus only) feeds the Redis buckets."""

    def __init__(self, tally: Tally | None = None) -> None:
        self.tally = tally

    def rest(self, method: str, route: str, status: int, seconds: float) -> None:
        method = bounded_method(method)
        REST_REQUESTS.labels(method, route, str(status)).inc()
        REST_DURATION.labels(method, route).observe(seconds)
        if self.tally is not None:
            self.tally.add(f"{FIELD_PREFIX}{status_class(str(status))}.{method} {route}")

    def grpc(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        GRPC_REQUESTS.labels(method, code.name).inc()
        GRPC_DURATION.labels(method).observe(seconds)
        if self.tally is not None:
            cls = status_class(str(_GRPC_AS_HTTP.get(code, 500)))
            self.tally.add(f"{FIELD_PREFIX}{cls}.gRPC {method}")
