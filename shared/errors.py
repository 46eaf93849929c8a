"""Domain errors: what went wrong, in the domain's words, and how each transport says it.

This is the one error table: each class names its HTTP status and its gRPC status code
(by name, so this module needs no gRPC import); the message is safe to show a caller.
`api/errors.py` turns an error into a REST response or a gRPC status from these alone.
"""

from __future__ import annotations

from typing import ClassVar


class FilecdnError(Exception):
    """Base of every error a caller may see; the message is safe to show.

    A subclass states its row of the table in its class line (a subclass of a subclass
    inherits it): `class NotFound(FilecdnError, http_status=404, grpc_code="NOT_FOUND")`.
    """

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[str] = "INTERNAL"
    # Seconds a caller should wait before trying again (REST's Retry-After); None: no hint.
    # A class states its default in its class line; one error may name its own.
    default_retry_after: ClassVar[int | None] = None

    def __init_subclass__(
        cls, *, http_status: int = 0, grpc_code: str = "", retry_after: int | None = None
    ) -> None:
        super().__init_subclass__()
        cls.http_status = http_status or cls.http_status
        cls.grpc_code = grpc_code or cls.grpc_code
        if retry_after is not None:
            cls.default_retry_after = retry_after

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = self.default_retry_after if retry_after is None else retry_after


class InvalidArgument(FilecdnError, http_status=400, grpc_code="INVALID_ARGUMENT"):
    """The request itself is wrong (bad field, bad filter, out of range)."""


class FailedPrecondition(FilecdnError, http_status=400, grpc_code="FAILED_PRECONDITION"):
    """The request is well-formed but the resource's state does not allow it."""


class NotFound(FilecdnError, http_status=404, grpc_code="NOT_FOUND"):
    """No such resource visible to the caller (also: another team's, deleted, expired)."""


class Unauthenticated(FilecdnError, http_status=401, grpc_code="UNAUTHENTICATED"):
    """Missing, unknown or revoked API key."""


class PermissionDenied(FilecdnError, http_status=403, grpc_code="PERMISSION_DENIED"):
    """A valid credential of the wrong kind (a team's API key on the operators' API)."""


class QuotaExceeded(FilecdnError, http_status=429, grpc_code="RESOURCE_EXHAUSTED"):
    """A per-team limit is reached (active public URLs)."""


class TooManyRequests(FilecdnError, http_status=429, grpc_code="RESOURCE_EXHAUSTED", retry_after=1):
    """A per-team or per-process limit on work in progress is reached (concurrent uploads):
    the same request succeeds once one of those finishes."""


class RequestTimeout(FilecdnError, http_status=408, grpc_code="DEADLINE_EXCEEDED"):
    """The client sent its request too slowly (the upload's body timeouts); nothing is kept."""


class PayloadTooLarge(FilecdnError, http_status=413, grpc_code="RESOURCE_EXHAUSTED"):
    """An upload exceeds the size limit."""


class Unavailable(FilecdnError, http_status=503, grpc_code="UNAVAILABLE", retry_after=1):
    """A dependency is down; retrying later may succeed (the xai-sdk retries by itself)."""


class Internal(FilecdnError, http_status=500, grpc_code="INTERNAL"):
    """A failure nobody planned for; its message never carries the cause's details."""
