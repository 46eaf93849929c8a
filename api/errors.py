"""Domain errors -> HTTP, in one place: status code plus upstream's JSON error shape
`{"code": "<gRPC status phrase>", "error": "<message>"}`."""

from __future__ import annotations

from aiohttp import web

from shared import errors

# The gRPC status descriptions upstream puts in "code".
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
    "UNIMPLEMENTED": "The operation is not implemented or is not supported/enabled in this service",
    "INTERNAL": "Internal errors",
}

_STATUS: dict[type[errors.FilecdnError], tuple[int, str]] = {
    errors.InvalidArgument: (400, "INVALID_ARGUMENT"),
    errors.FailedPrecondition: (400, "FAILED_PRECONDITION"),
    errors.NotFound: (404, "NOT_FOUND"),
    errors.Unauthenticated: (401, "UNAUTHENTICATED"),
    errors.PermissionDenied: (403, "PERMISSION_DENIED"),
    errors.QuotaExceeded: (429, "RESOURCE_EXHAUSTED"),
    errors.PayloadTooLarge: (413, "RESOURCE_EXHAUSTED"),
    errors.Unavailable: (503, "UNAVAILABLE"),
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"code": PHRASES[code], "error": message}, status=status, headers=headers
    )


def from_domain(exc: errors.FilecdnError) -> web.Response:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            status, code = _STATUS[cls]
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return error_response(status, code, exc.message, headers)
    return error_response(500, "INTERNAL", "internal error")
