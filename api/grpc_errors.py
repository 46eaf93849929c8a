"""Domain errors -> gRPC status codes, in one place (the REST twin is `api/errors.py`).

The details carry the same message REST puts in "error". UNAVAILABLE is kept for transient
failures only: the official SDK retries it by itself.
"""

from __future__ import annotations

import grpc
import structlog
from redis.exceptions import RedisError

from shared import errors

log = structlog.get_logger(__name__)

_CODES: dict[type[errors.FilecdnError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}

UNAVAILABLE_MESSAGE = "a dependency is unavailable; retry later"
INTERNAL_MESSAGE = "internal error"


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and details a failed RPC answers with; surprises are logged here."""
    if isinstance(exc, errors.FilecdnError):
        for cls in type(exc).__mro__:
            if cls in _CODES:
                return _CODES[cls], exc.message
    if isinstance(exc, RedisError):
        # As REST answers 503: the token cache cannot be kept exact, so we refuse.
        log.error("redis unavailable", error=str(exc))
        return grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE
    log.error("unhandled error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
