"""The S3 origin as the edge uses it: presigned GETs streamed with aiohttp, bounded waits.

Failures become `OriginError` with the status the client gets: 504 when S3 is too slow to
answer within EDGE_S3_TIMEOUT, 502 for everything else (refused, reset, wrong status or
length). Nothing here outlives a request except the shared fetch of a small object, which
concurrent requests for the same object wait on together, and the ranged GET of a slice
(`fetch_range`, shared the same way by `cdn_edge.slice_cache`). Every GET sent to S3 and every
body byte read from it are counted (`filecdn_edge_origin_requests_total`, `..._bytes_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import structlog

from cdn_edge.metrics import ORIGIN_BYTES, ORIGIN_REQUESTS, Counters
from shared.storage import Storage

log = structlog.get_logger(__name__)

_PRESIGN_REUSE = 300.0  # seconds a presigned URL is reused (they are signed for 600)
_MAX_PRESIGNED = 4096
_RANGE_CHUNK = 256 * 1024


class OriginError(Exception):
    """S3 could not give us the bytes; `status` is what the client is answered."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def origin_error(exc: BaseException) -> OriginError:
    if isinstance(exc, OriginError):
        return exc
    if isinstance(exc, TimeoutError):  # aiohttp's socket and connect timeouts included
        return OriginError(504, f"S3 timed out: {exc!r}")
    return OriginError(502, f"S3 failed: {exc!r}")


class OriginBody:
    """An S3 response's body, counted as it is read (`ORIGIN_BYTES`)."""

    __slots__ = ("_resp", "_slot", "read_bytes")

    def __init__(self, resp: aiohttp.ClientResponse, slot: memoryview) -> None:
        self._resp = resp
        self._slot = slot
        self.read_bytes = 0

    @property
    def content_length(self) -> int | None:
        return self._resp.content_length

    @property
    def total_size(self) -> int | None:
        """The object's size as a 206's `Content-Range: bytes a-b/size` gives it."""
        _, slash, total = self._resp.headers.get("Content-Range", "").rpartition("/")
        return int(total) if slash and total.isdigit() else None

    async def chunks(self, size: int) -> AsyncIterator[bytes]:
        async for chunk in self._resp.content.iter_chunked(size):
            self._count(len(chunk))
            yield chunk

    async def read(self) -> bytes:
        body = await self._resp.read()
        self._count(len(body))
        return body

    def _count(self, n: int) -> None:
        self._slot[ORIGIN_BYTES] += n
        self.read_bytes += n


class Origin:
    def __init__(self, storage: Storage, timeout: float, counters: Counters) -> None:
        self._storage = storage
        self._timeout = timeout
        self._slot = counters.slot
        self._presigned: dict[str, tuple[str, float]] = {}
        self._fetches: dict[str, asyncio.Task[bytes]] = {}

    def _url(self, key: str) -> str:
        # Signing is local but costs a few HMACs; a URL is good for ten minutes.
        now = time.monotonic()
        hit = self._presigned.get(key)
        if hit is not None and now - hit[1] < _PRESIGN_REUSE:
            return hit[0]
        url = self._storage.presigned_get(key)
        if len(self._presigned) >= _MAX_PRESIGNED:
            self._presigned.clear()
        self._presigned[key] = (url, now)
        return url

    @contextlib.asynccontextmanager
    async def open(
        self, key: str, first: int | None = None, last: int | None = None
    ) -> AsyncIterator[OriginBody]:
        """The object (or bytes first..last) as a streamed response with the status checked.

        Waiting for the response head is bounded by the timeout; each later read is bounded
        by the session's socket read timeout. Leaving early closes the S3 connection.
        """
        headers = {} if first is None else {"Range": f"bytes={first}-{last}"}
        self._slot[ORIGIN_REQUESTS] += 1
        try:
            async with asyncio.timeout(self._timeout):
                resp = await self._storage.session.get(self._url(key), headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise origin_error(exc) from exc
        body = OriginBody(resp, self._slot)
        try:
            expected = 200 if first is None else 206
            if resp.status != expected:
                raise OriginError(502, f"S3 answered {resp.status} for {key}")
            yield body
        finally:
            # Bytes that arrived but were never read (a client that left) cost egress too.
            self._slot[ORIGIN_BYTES] += max(0, resp.content.total_bytes - body.read_bytes)
            if resp.content.at_eof():
                resp.release()  # back to the pool for the next request
            else:
                resp.close()  # mid-body: the connection cannot be reused, close it now

    async def fetch(self, key: str, size: int) -> bytes:
        """The whole (small) object; concurrent callers for one object share one GET."""
        task = self._fetches.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(key, size))
            self._fetches[key] = task
            task.add_done_callback(lambda t: self._fetched(key, t))
        return await asyncio.shield(task)

    def _fetched(self, key: str, task: asyncio.Task[bytes]) -> None:
        if self._fetches.get(key) is task:
            del self._fetches[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away

    async def _fetch(self, key: str, size: int) -> bytes:
        try:
            async with asyncio.timeout(self._timeout), self.open(key) as src:
                if src.content_length != size:
                    raise OriginError(502, f"S3 has {src.content_length} bytes, record {size}")
                body = await src.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise origin_error(exc) from exc
        if len(body) != size:
            raise OriginError(502, f"S3 sent {len(body)} bytes, record says {size}")
        return body

    async def fetch_range(
        self,
        key: str,
        first: int,
        last: int,
        size: int,
        sink: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Bytes first..last of an object of `size` bytes, in one ranged GET; each chunk also
        goes to `sink` (a slice's file) as it arrives.

        The answer must describe an object of `size` bytes: an object replaced under its key
        since the token's record was written is refused (502), never cached as this version.
        """
        want = last - first + 1
        buf = bytearray()
        try:
            async with self.open(key, first, last) as src:
                if src.content_length != want or src.total_size != size:
                    raise OriginError(
                        502,
                        f"S3 sent {src.content_length} of {src.total_size} bytes for"
                        f" {first}-{last} of {size}",
                    )
                async for chunk in src.chunks(_RANGE_CHUNK):
                    buf += chunk
                    if sink is not None:
                        sink(chunk)
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            raise origin_error(exc) from exc
        if len(buf) != want:
            raise OriginError(502, f"S3 sent {len(buf)} of {want} bytes for {first}-{last}")
        return bytes(buf)
