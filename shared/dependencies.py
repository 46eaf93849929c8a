"""Which dependency a failure came from: the API answers it with 503 / UNAVAILABLE
(`api/errors.py`), the worker's loops name what they wait for (`worker/failures.py`).

A refused connection is an `OSError` whichever server refused it; the exception's type
answers for the clients that wrap their errors (redis-py, asyncpg's protocol errors,
minio), and the innermost frame of a client library answers for the rest.
"""

from __future__ import annotations

from types import TracebackType
from typing import Literal

import aiohttp
import asyncpg
import urllib3.exceptions
from minio.error import MinioException
from redis.exceptions import RedisError

Dependency = Literal["postgres", "redis", "s3"]

_POSTGRES_DOWN = (
    asyncpg.PostgresConnectionError,  # lost connection, cannot connect now, ...
    asyncpg.InterfaceError,  # the connection is closed or in a bad state
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
)
_BY_PACKAGE: dict[str, Dependency] = {
    "asyncpg": "postgres",
    "redis": "redis",
    "minio": "s3",
    "urllib3": "s3",  # minio's HTTP client
    "aiohttp": "s3",  # object reads
}


def failed_dependency(exc: BaseException) -> Dependency | None:
    """The dependency that failed, or None for a failure of our own (a bug: log it all)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _by_type(current)
        if found is None and isinstance(current, OSError):  # incl. TimeoutError
            found = _by_frame(current.__traceback__)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _by_type(exc: BaseException) -> Dependency | None:
    if isinstance(exc, RedisError):
        return "redis"
    if isinstance(exc, _POSTGRES_DOWN):
        return "postgres"
    if isinstance(exc, MinioException | urllib3.exceptions.HTTPError):
        return "s3"
    # Our only HTTP client is the S3 reader's session (a departing caller of our own servers
    # is told apart before this is asked: `api/middleware.py`).
    if isinstance(exc, aiohttp.ClientError):
        return "s3"
    return None


def _by_frame(tb: TracebackType | None) -> Dependency | None:
    """The client library closest to where the error was raised."""
    found: Dependency | None = None
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        found = _BY_PACKAGE.get(module.partition(".")[0], found)
        tb = tb.tb_next
    return found
