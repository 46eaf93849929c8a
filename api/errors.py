"""Failures -> what REST and gRPC answer, in one place.

Every exception a handler lets out becomes a domain error first (`as_domain_error`): its
own; UNAVAILABLE for a dependency that failed, refused or timed out (PostgreSQL, Redis, S3:
`shared.dependencies`; for Redis also because the token cache cannot be kept exact, so we
refuse); INTERNAL for anything else (logged here, never shown). Then the error's HTTP status
and gRPC code (`shared/errors.py`) give the answer: REST's body is upstream's shape
`{"code": "<gRPC status phrase>", "error": "<message>"}`, gRPC's details the same message;
a 429 or 503 also says when to retry (REST's `Retry-After`, gRPC's trailing metadata).
"""

from __future__ import annotations

import asyncpg
import grpc
import structlog
from aiohttp import web

from shared import errors
from shared.dependencies import failed_dependency

log = structlog.get_logger(__name__)

# The gRPC status descriptions upstream puts in REST's "code".
PHRASES = {
    "INVALID_ARGUMENT": "Client specified an invalid argument",
    "FAILED_PRECONDITION": "Operation was rejected because the system is not in a state "
    "required for the operation's execution",
    "NOT_FOUND": "Some requested entity was not found",
    "UNAUTHENTICATED": "The request does not have valid authentication credentials for the "
    "operation",
    "PERMISSION_DENIED": "The caller does not have permission to execute the specified operation",
    "RESOURCE_EXHAUSTED": "Some resource has been exhausted",
    "UNAVAILABLE": "The service is currently unavailable",
    "DEADLINE_EXCEEDED": "Deadline expired before operation could complete",
    "UNIMPLEMENTED": "The operation is not implemented or is not supported/enabled in this service",
    "INTERNAL": "Internal errors",
}

UNAVAILABLE_MESSAGE = "a dependency is unavailable; retry later"
INTERNAL_MESSAGE = "internal error"


def as_domain_error(exc: Exception) -> errors.FilecdnError:
    """The domain error a failed request answers with; surprises are logged here."""
    if isinstance(exc, errors.FilecdnError):
        return exc
    dependency = failed_dependency(exc)
    if dependency is not None:
        # No traceback: the dependency's own state is the story, not our stack.
        log.warning(
            "dependency unavailable",
            dependency=dependency,
            error=f"{type(exc).__name__}: {exc}"[:300],
        )
        return errors.Unavailable(UNAVAILABLE_MESSAGE)
    if isinstance(exc, asyncpg.QueryCanceledError):  # DB_STATEMENT_TIMEOUT
        log.warning("statement timed out", error=str(exc))
        return errors.Unavailable("the database took too long to answer; retry later")
    log.error("unhandled error", exc_info=exc)
    return errors.Internal(INTERNAL_MESSAGE)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """A REST error in upstream's shape; `code` is a gRPC status name."""
    return web.json_response(
        {"code": PHRASES[code], "error": message}, status=status, headers=headers
    )


def rest_response(exc: Exception) -> web.Response:
    err = as_domain_error(exc)
    headers: dict[str, str] = {}
    if err.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if err.retry_after is not None:  # 429 for a limit, 503 for a dependency: when to retry
        headers["Retry-After"] = str(err.retry_after)
    return error_response(err.http_status, err.grpc_code, err.message, headers or None)


Trailers = tuple[tuple[str, str], ...]


def grpc_answer(exc: Exception) -> tuple[grpc.StatusCode, str, Trailers]:
    """The status, details and trailing metadata a failed RPC answers with. When to retry
    goes as `retry-after` (seconds, as REST's header) and as `grpc-retry-pushback-ms`, the
    server pushback a gRPC client's retry policy waits for (gRFC A6)."""
    err = as_domain_error(exc)
    trailers: Trailers = ()
    if err.retry_after is not None:
        trailers = (
            ("retry-after", str(err.retry_after)),
            ("grpc-retry-pushback-ms", str(err.retry_after * 1000)),
        )
    return grpc.StatusCode[err.grpc_code], err.message, trailers


def grpc_status(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and details a failed RPC answers with."""
    code, details, _ = grpc_answer(exc)
    return code, details
