"""S3 access, in one module.

The `minio` client is synchronous, so every call runs on a dedicated thread pool (never on
the event loop). Reads are streamed with aiohttp from locally presigned URLs: that keeps
the hot path non-blocking, gives back-pressure, and lets a disconnecting reader release its
S3 connection at once. `region=` is always set so presigning never goes to the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp
import certifi
import urllib3
from minio import Minio
from minio.datatypes import CompleteMultipartUploadResult, Part
from minio.error import S3Error
from minio.helpers import ObjectWriteResult

from shared.settings import Settings

T = TypeVar("T")

PART_SIZE = 5 * 1024 * 1024  # S3's minimum multipart part size; bounds upload memory
_PRESIGN_TTL = timedelta(minutes=10)
_LIST_PAGE = 1000


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class ObjectWriter:
    """Streams bytes to one S3 object with bounded memory: at most two 5 MiB parts live.

    We drive the multipart upload ourselves (minio's underscore-named S3 calls, stable across
    7.x) because `put_object` with an unknown length copies every part three times. One
    preallocated part buffer fills while at most one part is on the wire, and the buffer
    itself is the request body (urllib3 sends anything with the buffer protocol as is).
    `abort` is safe at any time and returns once nothing remains in S3.
    """

    def __init__(self, storage: Storage, key: str) -> None:
        self.key = key
        self._storage = storage
        self._client = storage.client
        self._buf = bytearray(PART_SIZE)
        self._fill = 0
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._inflight: asyncio.Future[None] | None = None
        self._closed = False

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), PART_SIZE - self._fill)
            self._buf[self._fill : self._fill + take] = view[:take]
            self._fill += take
            view = view[take:]
            if self._fill == PART_SIZE:
                await self._send_part()

    async def _send_part(self) -> None:
        part = memoryview(self._buf)[: self._fill]
        if self._inflight is not None:
            await self._inflight  # back-pressure: one part on the wire at a time
        if self._upload_id is None:
            self._upload_id = await self._storage.run_in_thread(
                self._client._create_multipart_upload,
                self._storage.bucket,
                self.key,
                {"Content-Type": "application/octet-stream"},
            )
        self._inflight = self._storage.run_in_thread(self._upload_part, part, len(self._parts) + 1)
        self._parts.append(Part(len(self._parts) + 1, ""))
        self._buf = bytearray(PART_SIZE)
        self._fill = 0

    def _upload_part(self, part: memoryview, number: int) -> None:
        if self._upload_id is None:
            raise RuntimeError("a part was sent before its multipart upload was created")
        # minio annotates `bytes`, but only hashes the body and hands it to urllib3, which
        # sends any buffer as is: passing the view avoids a 5 MiB copy per part.
        etag = self._client._upload_part(
            self._storage.bucket, self.key, cast(bytes, part), None, self._upload_id, number
        )
        self._parts[number - 1] = Part(number, etag)

    async def finish(self) -> str:
        """Complete the object; returns S3's etag."""
        result: ObjectWriteResult | CompleteMultipartUploadResult
        if self._upload_id is None:  # small object: one PUT
            body = cast(bytes, memoryview(self._buf)[: self._fill])
            result = await self._storage.run_in_thread(
                self._client._put_object, self._storage.bucket, self.key, body, None
            )
        else:
            if self._fill:
                await self._send_part()
            if self._inflight is not None:  # always: a multipart upload has sent a part
                await self._inflight
            result = await self._storage.run_in_thread(
                self._client._complete_multipart_upload,
                self._storage.bucket,
                self.key,
                self._upload_id,
                self._parts,
            )
        self._closed = True
        self._buf = bytearray()
        return str(result.etag)

    async def abort(self) -> None:
        """Drop everything sent so far (an open multipart upload included)."""
        if self._closed:
            return
        self._closed = True
        self._buf = bytearray()
        if self._inflight is not None:
            with contextlib.suppress(Exception):
                await self._inflight
        if self._upload_id is not None:
            await self._storage.run_in_thread(
                self._client._abort_multipart_upload,
                self._storage.bucket,
                self.key,
                self._upload_id,
            )


class Storage:
    """The S3 bucket, its thread pool and an HTTP session for streamed reads."""

    def __init__(self, settings: Settings, *, read_timeout: float | None = None) -> None:
        """`read_timeout`: how long S3 may take to answer (the edge passes its own); the
        API and worker use S3_READ_TIMEOUT. Connecting is bounded by S3_CONNECT_TIMEOUT."""
        if not settings.s3_endpoint:
            raise RuntimeError("S3_ENDPOINT is not set")
        url = urlsplit(settings.s3_endpoint)
        self.bucket = settings.s3_bucket
        self._connect_timeout = settings.s3_connect_timeout
        self._read_timeout = read_timeout or settings.s3_read_timeout
        self.client = Minio(
            url.netloc,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=url.scheme == "https",
            region=settings.s3_region,
            http_client=self._http_client(settings.s3_threads),
        )
        self._executor = ThreadPoolExecutor(settings.s3_threads, thread_name_prefix="s3")
        self._session: aiohttp.ClientSession | None = None

    def _http_client(self, threads: int) -> urllib3.PoolManager:
        """minio's own client (CA bundle, retries on S3's 5xx), but with our timeouts (minio's
        are five minutes) and no retry once a request was sent and S3 went quiet: a hung S3
        fails a call within the read timeout, not a multiple of it."""
        return urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=self._connect_timeout, read=self._read_timeout),
            maxsize=threads,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=3,
                read=0,
                backoff_factor=0.2,
                status_forcelist=[500, 502, 503, 504],
            ),
        )

    def run_in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self._connect_timeout, sock_read=self._read_timeout
                ),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def ensure_bucket(self) -> None:
        if not await self.run_in_thread(self.client.bucket_exists, self.bucket):
            with contextlib.suppress(S3Error):  # another process created it first
                await self.run_in_thread(self.client.make_bucket, self.bucket)

    async def ping(self) -> None:
        await self.run_in_thread(self.client.bucket_exists, self.bucket)

    def writer(self, key: str) -> ObjectWriter:
        return ObjectWriter(self, key)

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = await self.run_in_thread(self.client.stat_object, self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return None
            raise
        return ObjectInfo(key, int(st.size or 0), str(st.etag))

    async def delete(self, key: str) -> None:
        """Delete an object; deleting a missing one is not an error (idempotent)."""
        await self.run_in_thread(self.client.remove_object, self.bucket, key)

    async def list_objects(self, prefix: str) -> AsyncIterator[tuple[str, datetime | None]]:
        """(key, last modified) of every object under prefix, a page at a time in a thread."""
        start_after: str | None = None
        while True:
            page = await self.run_in_thread(self._list_page, prefix, start_after)
            for item in page:
                yield item
            if len(page) < _LIST_PAGE:
                return
            start_after = page[-1][0]

    def _list_page(self, prefix: str, start_after: str | None) -> list[tuple[str, datetime | None]]:
        out: list[tuple[str, datetime | None]] = []
        for obj in self.client.list_objects(
            self.bucket, prefix=prefix, recursive=True, start_after=start_after
        ):
            out.append((str(obj.object_name), obj.last_modified))
            if len(out) >= _LIST_PAGE:
                break
        return out

    def presigned_get(self, key: str) -> str:
        """A GET URL signed locally (no network: region is set)."""
        return str(self.client.presigned_get_object(self.bucket, key, expires=_PRESIGN_TTL))

    @contextlib.asynccontextmanager
    async def open(
        self, key: str, headers: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET the object (Range and conditional headers passed through), streamed."""
        async with self.session.get(self.presigned_get(key), headers=headers or {}) as resp:
            yield resp
