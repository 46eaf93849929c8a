"""S3 access, in one module.

The `minio` client is synchronous, so every call runs on a dedicated thread pool (never on
the event loop). Reads are streamed with aiohttp from locally presigned URLs: that keeps
the hot path non-blocking, gives back-pressure, and lets a disconnecting reader release its
S3 connection at once. `region=` is always set so presigning never goes to the network.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import certifi
import urllib3
from minio import Minio
from minio.datatypes import CompleteMultipartUploadResult, Part
from minio.error import S3Error, ServerError

from shared.settings import Settings
from shared.upload_limits import UploadMemory

T = TypeVar("T")

PART_SIZE = 5 * 1024 * 1024  # S3's minimum multipart part size (but for the last)
# Parts of one upload on the wire at once, while the next fills: two keep the socket to
# S3 busy while a part is hashed (measured: bench/upload.py).
PARTS_IN_FLIGHT = 2
_PRESIGN_TTL = timedelta(minutes=10)
_LIST_PAGE = 1000
_Query = dict[str, str | list[str] | tuple[str]]  # minio's query parameters


@dataclass(frozen=True)
class OpenUpload:
    """A multipart upload S3 holds open: its parts cost storage until completed or aborted."""

    key: str
    upload_id: str
    initiated: datetime | None


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class ObjectWriter:
    """Streams bytes to one S3 object, holding only what has arrived and is not yet stored.

    Chunks are kept as they come (no copy, no buffer sized up front) until they make a part
    of at least 5 MiB (S3's minimum, but for the last); then the part goes to S3 from the
    thread pool while the next fills, up to PARTS_IN_FLIGHT at a time. Memory is reserved
    from the process's `UploadMemory` as bytes arrive and returned as parts are stored.

    Parts go by presigned PUT through minio's urllib3 pool, the chunk list as the body:
    minio's own calls sign the payload over plain http, hashing every byte with SHA-256
    once more, and want one contiguous buffer. The object's SHA-256 (the file's etag) is
    computed in the same threads, part after part in order, off the event loop. Multipart
    create/complete/abort are minio's underscore-named S3 calls (stable across 7.x).
    `abort` is safe at any time and returns once nothing remains in S3.
    """

    def __init__(self, storage: Storage, key: str, memory: UploadMemory | None = None) -> None:
        self.key = key
        self._storage = storage
        self._client = storage.client
        self._memory = memory
        self._chunks: list[bytes] = []
        self._fill = 0  # bytes in _chunks
        self._reserved = 0  # of the memory budget, for _chunks
        self._hash = hashlib.sha256()
        self._hashed: threading.Event | None = None  # set once the last part sent is hashed
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._inflight: collections.deque[asyncio.Future[None]] = collections.deque()
        self._whole: asyncio.Future[str] | None = None  # the one PUT of a small object
        self._closed = False

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeError("write after finish or abort")
        if not data:
            return
        if not isinstance(data, bytes):
            data = bytes(data)  # kept until sent: a caller's buffer could change meanwhile
        if self._memory is not None:
            self._reserved += await self._memory.take(len(data))
        self._chunks.append(data)
        self._fill += len(data)
        if self._fill >= PART_SIZE:
            await self._send_part()

    def _take_buffer(self) -> tuple[list[bytes], int, int]:
        taken = self._chunks, self._fill, self._reserved
        self._chunks, self._fill, self._reserved = [], 0, 0
        return taken

    def _give_back(self, reserved: int) -> None:
        if self._memory is not None and reserved:
            self._memory.give(reserved)

    def _hash_turn(self) -> tuple[threading.Event | None, threading.Event]:
        """The event the next part's hashing waits for, and the one it sets."""
        before, self._hashed = self._hashed, threading.Event()
        return before, self._hashed

    async def _settle_oldest(self) -> None:
        """Wait for the oldest part on the wire; its failure is the upload's."""
        job = self._inflight[0]
        try:
            # Shielded: a cancelled caller must not cancel the future of a part that is
            # still being sent, or abort would not wait for it.
            await asyncio.shield(job)
        finally:
            if job.done():
                self._inflight.popleft()

    async def _send_part(self) -> None:
        chunks, size, reserved = self._take_buffer()
        try:
            while len(self._inflight) >= PARTS_IN_FLIGHT:
                await self._settle_oldest()  # back-pressure: the reader waits for S3
            if self._upload_id is None:
                self._upload_id = await self._storage.run_in_thread(
                    self._client._create_multipart_upload,
                    self._storage.bucket,
                    self.key,
                    {"Content-Type": "application/octet-stream"},
                )
        except BaseException:
            self._give_back(reserved)
            raise
        number = len(self._parts) + 1
        self._parts.append(Part(number, ""))
        job = self._storage.run_in_thread(
            self._upload_part, chunks, size, number, *self._hash_turn()
        )
        job.add_done_callback(lambda _: self._give_back(reserved))
        self._inflight.append(job)

    def _hash_in_order(
        self, chunks: list[bytes], before: threading.Event | None, done: threading.Event
    ) -> None:
        # The pool runs jobs in the order they were queued, so the previous part's job has
        # started by now and sets `before` whatever happens to it.
        try:
            if before is not None:
                before.wait()
            for chunk in chunks:
                self._hash.update(chunk)  # hashlib releases the GIL for large buffers
        finally:
            done.set()

    def _upload_part(
        self,
        chunks: list[bytes],
        size: int,
        number: int,
        before: threading.Event | None,
        done: threading.Event,
    ) -> None:
        if self._upload_id is None:
            raise RuntimeError("a part was sent before its multipart upload was created")
        self._hash_in_order(chunks, before, done)
        query: _Query = {"uploadId": self._upload_id, "partNumber": str(number)}
        etag = self._put(chunks, size, query)
        self._parts[number - 1] = Part(number, etag)

    def _put_whole(
        self, chunks: list[bytes], size: int, before: threading.Event | None, done: threading.Event
    ) -> str:
        self._hash_in_order(chunks, before, done)
        return self._put(chunks, size, None)

    def _put(self, chunks: list[bytes], size: int, query: _Query | None) -> str:
        """PUT the chunks as one body (an object, or a part when `query` names one)."""
        url = self._client.get_presigned_url(
            "PUT", self._storage.bucket, self.key, _PRESIGN_TTL, extra_query_params=query
        )
        response = self._client._http.urlopen(
            "PUT",
            url,
            body=chunks,  # a list: sent chunk by chunk, and again if urllib3 retries
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        if response.status != 200:
            if response.data:
                raise S3Error.fromxml(response)
            raise ServerError(f"S3 answered a PUT with {response.status}", response.status)
        return str(response.headers.get("ETag", "")).replace('"', "")

    async def finish(self) -> str:
        """Complete the object; returns S3's etag. `sha256()` is the object's after this."""
        if self._closed:
            raise RuntimeError("finish after finish or abort")
        if self._upload_id is None and not self._inflight:  # small object: one PUT
            chunks, size, reserved = self._take_buffer()
            self._whole = self._storage.run_in_thread(
                self._put_whole, chunks, size, *self._hash_turn()
            )
            try:
                etag = await asyncio.shield(self._whole)
            finally:
                self._give_back(reserved)
        else:
            if self._fill:
                await self._send_part()
            while self._inflight:
                await self._settle_oldest()
            result: CompleteMultipartUploadResult = await self._storage.run_in_thread(
                self._client._complete_multipart_upload,
                self._storage.bucket,
                self.key,
                self._upload_id,
                self._parts,
            )
            etag = str(result.etag)
        self._closed = True
        return etag

    def sha256(self) -> bytes:
        """The SHA-256 of every byte written (once `finish` has returned)."""
        return self._hash.digest()

    async def abort(self) -> None:
        """Drop everything sent so far (an open multipart upload included)."""
        if self._closed:
            return
        self._closed = True
        _, _, reserved = self._take_buffer()
        self._give_back(reserved)
        while self._inflight:
            with contextlib.suppress(Exception):
                await self._settle_oldest()
        if self._whole is not None:  # a one-PUT object whose finish was cancelled
            with contextlib.suppress(Exception):
                await self._whole
            await self._storage.delete(self.key)
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

    def writer(self, key: str, memory: UploadMemory | None = None) -> ObjectWriter:
        """A writer for one new object; `memory` bounds what the process's uploads hold."""
        return ObjectWriter(self, key, memory)

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

    async def open_uploads(self, prefix: str) -> list[OpenUpload]:
        """Every multipart upload open under prefix (an API process that died mid-upload
        leaves one that only an abort ends)."""
        found: list[OpenUpload] = []
        key_marker: str | None = None
        upload_marker: str | None = None
        while True:
            page = await self.run_in_thread(
                self.client._list_multipart_uploads,
                self.bucket,
                prefix=prefix,
                key_marker=key_marker,
                upload_id_marker=upload_marker,
                max_uploads=_LIST_PAGE,
            )
            found += [
                OpenUpload(u.object_name, u.upload_id, u.initiated_time)
                for u in page.uploads
                if u.upload_id
            ]
            if not page.is_truncated or not page.uploads:
                return found
            # minio files NextUploadIdMarker under a wrong attribute name: use the last one.
            key_marker, upload_marker = page.uploads[-1].object_name, page.uploads[-1].upload_id

    async def abort_upload(self, upload: OpenUpload) -> None:
        await self.run_in_thread(
            self.client._abort_multipart_upload, self.bucket, upload.key, upload.upload_id
        )

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
