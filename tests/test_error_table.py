"""One error table for both transports: each domain error's HTTP status, gRPC code and
message, exactly as they go on the wire, and one bearer-key parser for REST and gRPC."""

from __future__ import annotations

import json

import grpc
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from api.auth import bearer_key
from api.errors import PHRASES, grpc_answer, grpc_status, rest_response
from shared import errors

# The wire contract (files-api.md): REST status, gRPC status.
WIRE: dict[type[errors.FilecdnError], tuple[int, grpc.StatusCode]] = {
    errors.InvalidArgument: (400, grpc.StatusCode.INVALID_ARGUMENT),
    errors.FailedPrecondition: (400, grpc.StatusCode.FAILED_PRECONDITION),
    errors.NotFound: (404, grpc.StatusCode.NOT_FOUND),
    errors.Unauthenticated: (401, grpc.StatusCode.UNAUTHENTICATED),
    errors.PermissionDenied: (403, grpc.StatusCode.PERMISSION_DENIED),
    errors.QuotaExceeded: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    errors.TooManyRequests: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    errors.RequestTimeout: (408, grpc.StatusCode.DEADLINE_EXCEEDED),
    errors.PayloadTooLarge: (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    errors.Unavailable: (503, grpc.StatusCode.UNAVAILABLE),
    errors.Internal: (500, grpc.StatusCode.INTERNAL),
}


def _rest(exc: Exception) -> tuple[int, dict[str, str], dict[str, str]]:
    response = rest_response(exc)
    assert isinstance(response.body, bytes)
    return response.status, json.loads(response.body), dict(response.headers)


def test_every_domain_error_is_in_the_table() -> None:
    assert set(errors.FilecdnError.__subclasses__()) == set(WIRE)


@pytest.mark.parametrize("cls", list(WIRE))
def test_each_error_answers_the_same_on_rest_and_grpc(cls: type[errors.FilecdnError]) -> None:
    status, code = WIRE[cls]
    rest_status, body, _ = _rest(cls("the message"))
    assert rest_status == status
    assert body == {"code": PHRASES[code.name], "error": "the message"}
    assert grpc_status(cls("the message")) == (code, "the message")


def test_unauthenticated_asks_for_a_bearer_key_on_rest() -> None:
    _, _, headers = _rest(errors.Unauthenticated("no key"))
    assert headers["WWW-Authenticate"] == "Bearer"
    _, _, headers = _rest(errors.NotFound("no file"))
    assert "WWW-Authenticate" not in headers


def test_retryable_errors_say_when_to_retry_on_rest() -> None:
    _, _, headers = _rest(errors.Unavailable("busy"))
    assert headers["Retry-After"] == "1"
    _, _, headers = _rest(errors.TooManyRequests("too many uploads", retry_after=3))
    assert headers["Retry-After"] == "3"
    _, _, headers = _rest(errors.InvalidArgument("bad"))
    assert "Retry-After" not in headers


def test_retryable_errors_say_when_to_retry_on_grpc_too() -> None:
    assert grpc_answer(errors.Unavailable("busy"))[2] == (
        ("retry-after", "1"),
        ("grpc-retry-pushback-ms", "1000"),
    )
    trailers = grpc_answer(errors.TooManyRequests("too many uploads", retry_after=3))[2]
    assert dict(trailers) == {"retry-after": "3", "grpc-retry-pushback-ms": "3000"}
    assert grpc_answer(errors.InvalidArgument("bad"))[2] == ()


def test_redis_down_is_unavailable_on_both() -> None:
    assert _rest(RedisConnectionError("refused"))[:2] == (
        503,
        {"code": PHRASES["UNAVAILABLE"], "error": "a dependency is unavailable; retry later"},
    )
    assert grpc_status(RedisConnectionError("refused"))[0] == grpc.StatusCode.UNAVAILABLE


def test_a_surprise_is_internal_and_keeps_its_details_to_the_log() -> None:
    status, body, _ = _rest(KeyError("secret detail"))
    assert (status, body["error"]) == (500, "internal error")
    code, details = grpc_status(KeyError("secret detail"))
    assert code == grpc.StatusCode.INTERNAL and "secret" not in details


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("Bearer fcdn_abc", "fcdn_abc"),
        ("bearer  fcdn_abc ", "fcdn_abc"),
        ("BEARER fcdn_abc", "fcdn_abc"),
        ("Bearer ", ""),
        ("Basic dXNlcjpwYXNz", None),
        ("fcdn_abc", None),
        ("", None),
        (None, None),
    ],
)
def test_one_bearer_parser_reads_rest_headers_and_grpc_metadata(
    value: str | None, key: str | None
) -> None:
    assert bearer_key(value) == key
