"""Deadlines for reading a request body, the same for REST's multipart and gRPC's upload
stream: a client that stalls gets RequestTimeout (408 / DEADLINE_EXCEEDED), and the
handler's cleanup drops what it sent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from shared.errors import RequestTimeout
from shared.settings import Settings

T = TypeVar("T")


class BodyClock:
    """An upload body's deadlines: each read waits at most `upload_idle_timeout` for
    bytes, and the whole body must be in by `upload_body_timeout` (one clock per request).
    Neither aiohttp nor grpc.aio has a body timeout of its own: without these a client
    that stalls holds its connection, its upload slot and what it sent for ever."""

    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle = settings.upload_idle_timeout
        self._total = settings.upload_body_timeout
        self._end = self._loop.time() + self._total

    async def read(self, step: Awaitable[T]) -> T:
        idle_end = self._loop.time() + self._idle
        deadline = asyncio.timeout_at(min(idle_end, self._end))
        try:
            async with deadline:
                return await step
        except TimeoutError:
            if not deadline.expired():
                raise
            if idle_end <= self._end:
                raise RequestTimeout(
                    f"the request body stalled: nothing arrived for {self._idle:g} s"
                ) from None
            raise RequestTimeout(
                f"the request body did not arrive within {self._total:g} s"
            ) from None
