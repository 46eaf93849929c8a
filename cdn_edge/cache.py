"""Content caches: small objects in process memory, hot large ones on local disk.

Both hold bytes only, keyed by object key + ETag (a changed object can never be served
stale), bounded by size with least-recently-used eviction, and emptied of an object when
its file is deleted. Neither holds authorisation: every request checks its token in Redis
before any cached byte is sent.

The disk cache is shared by every edge process on the machine: files are written to a
temporary name and renamed into place (readers see whole files or nothing), recency is the
file's mtime (touched on use, at most every few seconds), and whoever finds the directory
over its bound deletes the oldest files, tolerating files that vanish under it. A cached
file is opened per request and sent from the page cache (sendfile(2) on asyncio's loop,
read and write in chunks on uvloop, which has no sendfile). A file deleted (evicted) while
a response is reading it stays readable until that response closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600.0  # a temporary file this old was left by a crashed process
_TOUCH_EVERY = 5.0  # seconds between mtime updates of a file in use
_TRIM_EVERY = 30.0  # seconds between scans that learn what other processes added
_TRIM_TO = 0.9  # trimming goes a little below the bound so it does not run on every add
_MAX_TOUCHED = 4096  # names whose last mtime update this process remembers


class MemoryCache:
    """Small objects' bytes in this process, LRU by total size."""

    def __init__(self, max_bytes: int, object_max: int) -> None:
        self.max_bytes = max_bytes
        self.object_max = min(object_max, max_bytes)
        self.bytes = 0
        self._items: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def admits(self, size: int) -> bool:
        return 0 < size <= self.object_max

    def get(self, object_key: str, etag: str) -> bytes | None:
        item = self._items.get(object_key)
        if item is None or item[0] != etag:
            return None
        self._items.move_to_end(object_key)
        return item[1]

    def put(self, object_key: str, etag: str, body: bytes) -> None:
        if not self.admits(len(body)):
            return
        self.evict(object_key)
        self._items[object_key] = (etag, body)
        self.bytes += len(body)
        while self.bytes > self.max_bytes:
            _, (_, old) = self._items.popitem(last=False)
            self.bytes -= len(old)

    def evict(self, object_key: str) -> bool:
        item = self._items.pop(object_key, None)
        if item is None:
            return False
        self.bytes -= len(item[1])
        return True


def file_name(object_key: str, etag: str) -> str:
    """The cache file of one version of an object (every version shares the key's prefix)."""
    return f"{_key_prefix(object_key)}{hashlib.sha256(etag.encode()).hexdigest()[:16]}"


def _key_prefix(object_key: str) -> str:
    return hashlib.sha256(object_key.encode()).hexdigest()[:32] + "-"


class DiskWriter:
    """Fills one cache file: bytes go to a temporary file, renamed into place when whole."""

    def __init__(self, cache: DiskCache, name: str, size: int) -> None:
        self._cache = cache
        self._name = name
        self._size = size
        self._written = 0
        self._tmp = cache.directory / f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append; a full disk or any write error just abandons the fill."""
        if self._fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self._written += n
        except OSError as exc:
            log.warning("disk cache write failed", error=str(exc))
            self.abort()

    def commit(self) -> bool:
        if self._fd is None:
            return False
        if self._written != self._size:
            self.abort()
            return False
        os.close(self._fd)
        self._fd = None
        try:
            os.rename(self._tmp, self._cache.directory / self._name)
        except OSError as exc:
            log.warning("disk cache rename failed", error=str(exc))
            self._unlink()
            self._cache._filled(self._name, 0)
            return False
        self._cache._filled(self._name, self._size)
        return True

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._unlink()
            self._cache._filled(self._name, 0)

    def _unlink(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


class DiskCache:
    """Large objects' bytes in a directory shared by the edge processes of one machine."""

    def __init__(self, directory: Path, max_bytes: int, object_max: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.object_max = min(object_max, max_bytes // 4)
        self.estimate = 0  # bytes in the directory, as of the last scan plus our own adds
        self._touched: dict[str, float] = {}
        self._filling: set[str] = set()
        self._trimming: asyncio.Task[None] | None = None
        if self.object_max > 0:
            directory.mkdir(parents=True, exist_ok=True)

    def admits(self, size: int) -> bool:
        return 0 < size <= self.object_max

    def open(self, object_key: str, etag: str, size: int) -> io.FileIO | None:
        """This machine's copy of the object, opened for reading, or None if it has none."""
        if not self.admits(size):
            return None
        name = file_name(object_key, etag)
        path = self.directory / name
        try:
            f = io.FileIO(path, "r")
        except OSError:
            return None
        try:
            if os.fstat(f.fileno()).st_size != size:
                f.close()
                return None
        except OSError:
            f.close()
            return None
        now = time.monotonic()
        if now - self._touched.get(name, 0.0) >= _TOUCH_EVERY:
            # Mark it recently used for every process's LRU (the directory is shared).
            with contextlib.suppress(OSError):
                os.utime(path)
            if len(self._touched) >= _MAX_TOUCHED:
                self._touched.clear()
            self._touched[name] = now
        return f

    def writer(self, object_key: str, etag: str, size: int) -> DiskWriter | None:
        """A writer for a copy of this object, unless one is being written by this process."""
        if not self.admits(size):
            return None
        name = file_name(object_key, etag)
        if name in self._filling:
            return None
        try:
            writer = DiskWriter(self, name, size)
        except OSError as exc:
            log.warning("disk cache unavailable", error=str(exc))
            return None
        self._filling.add(name)
        return writer

    def _filled(self, name: str, size: int) -> None:
        self._filling.discard(name)
        self.estimate += size
        if self.estimate > self.max_bytes:
            self.trim_soon()

    def trim_soon(self) -> None:
        if self._trimming is None or self._trimming.done():
            self._trimming = asyncio.get_running_loop().create_task(self.trim())

    async def trim(self) -> None:
        """Scan the directory (in a thread) and delete the oldest files beyond the bound."""
        self.estimate = await asyncio.to_thread(_trim, self.directory, self.max_bytes)

    async def run_trimmer(self) -> None:
        """Trim now and then: other processes add files we do not count ourselves."""
        while True:
            try:
                await self.trim()
            except OSError as exc:
                log.warning("disk cache scan failed", error=str(exc))
            await asyncio.sleep(_TRIM_EVERY)

    async def evict(self, object_key: str) -> int:
        """Forget every copy of an object (all ETags); returns the files deleted."""
        if self.object_max <= 0:
            return 0
        return await asyncio.to_thread(_unlink_prefix, self.directory, _key_prefix(object_key))


def _trim(directory: Path, max_bytes: int) -> int:
    files: list[tuple[float, int, str]] = []
    now = time.time()
    with os.scandir(directory) as it:
        for entry in it:
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            if entry.name.startswith(_TMP_PREFIX):
                if now - st.st_mtime > _STALE_TMP_SECONDS:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                continue
            files.append((st.st_mtime, st.st_size, entry.path))
    total = sum(size for _, size, _ in files)
    if total <= max_bytes:
        return total
    files.sort()
    target = int(max_bytes * _TRIM_TO)
    for _, size, path in files:
        if total <= target:
            break
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        total -= size
    return total


def _unlink_prefix(directory: Path, prefix: str) -> int:
    gone = 0
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    gone += 1
    return gone
