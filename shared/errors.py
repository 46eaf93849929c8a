"""Domain errors: what went wrong, in the domain's words, and how each transport says it.

This is the one error table: each class names its HTTP status and its gRPC status code
(by name, so this module needs no gRPC import); the message is safe to show a caller.
`api/errors.py` turns an error into a REST response or a gRPC status from these alone.
"""

from __future__ import annotations

from typing import ClassVar


class FilecdnError(Exception):
    """Base of every error a caller may see; the message is safe to show."""

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(FilecdnError):
    """The request itself is wrong (bad field, bad filter, out of range)."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class FailedPrecondition(FilecdnError):
    """The request is well-formed but the resource's state does not allow it."""

    http_status = 400
    grpc_code = "FAILED_PRECONDITION"


class NotFound(FilecdnError):
    """No such resource visible to the caller (also: another team's, deleted, expired)."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class Unauthenticated(FilecdnError):
    """Missing, unknown or revoked API key."""

    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class QuotaExceeded(FilecdnError):
    """A per-team limit is reached (active public URLs)."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"


class PayloadTooLarge(FilecdnError):
    """An upload exceeds the size limit."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unavailable(FilecdnError):
    """A dependency is down; retrying later may succeed (the xai-sdk retries by itself)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class Internal(FilecdnError):
    """A failure nobody planned for; its message never carries the cause's details."""
