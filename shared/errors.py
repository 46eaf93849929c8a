"""Domain errors: what went wrong, in the domain's words.

They carry no HTTP or gRPC status; `api/errors.py` maps them to HTTP and
`api/grpc_errors.py` to gRPC codes, each in one place.
"""

from __future__ import annotations


class FilecdnError(Exception):
    """Base of every error a caller may see; the message is safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(FilecdnError):
    """The request itself is wrong (bad field, bad filter, out of range)."""


class FailedPrecondition(FilecdnError):
    """The request is well-formed but the resource's state does not allow it."""


class NotFound(FilecdnError):
    """No such resource visible to the caller (also: another team's, deleted, expired)."""


class Unauthenticated(FilecdnError):
    """Missing, unknown or revoked API key."""


class PermissionDenied(FilecdnError):
    """The key is valid but may not do this."""


class QuotaExceeded(FilecdnError):
    """A per-team limit is reached (active public URLs)."""


class PayloadTooLarge(FilecdnError):
    """An upload exceeds the size limit."""


class Unavailable(FilecdnError):
    """A dependency is down; retrying later may succeed."""
