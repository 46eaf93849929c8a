"""The slice cache: objects above the memory cache's bound, in fixed slices fetched on demand.

An object is cut into slices of EDGE_SLICE_BYTES (1 MiB); a request gets the slices its
byte range covers, each from the first place that has it:

1. this process's memory (an LRU of slices, EDGE_SLICE_MEMORY_BYTES), else
2. a load already under way in this process (one asyncio task per slice, shared), else
3. the machine's slice directory (`cdn_edge.slice_files`), else
4. S3, with one ranged GET for the slice, by exactly one process of the machine: the one
   that takes the slice's lock file; the others poll until its file appears.

So a cold `Range: bytes=0-0` reads one slice from S3, not the object, and concurrent misses
for one slice on every worker of a machine read it from S3 once. Slices are keyed by object
key + ETag (+ slice size): a replaced object never mixes with its old slices. Like the
memory cache, this holds bytes only; every request checks its token first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import structlog

from cdn_edge import slices
from cdn_edge.origin import Origin
from cdn_edge.slice_files import (
    SliceFiles,
    SliceLock,
    key_prefix,
    trim,
    unlink_prefix,
    version_prefix,
)

log = structlog.get_logger(__name__)

_POLL_MIN, _POLL_MAX = 0.002, 0.05  # seconds between looks at another process's fill
_TRIM_EVERY = 30.0  # seconds between scans that learn what other processes added
_MIN_SLICES = 4  # a directory bound below this many slices turns the cache off
_MAX_VERSIONS = 4096  # object versions whose slice names this process remembers


class SliceMemory:
    """The slices this process used last, LRU by total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, name: str) -> bytes | None:
        data = self._items.get(name)
        if data is not None:
            self._items.move_to_end(name)
        return data

    def put(self, name: str, data: bytes) -> None:
        if len(data) > self.max_bytes or name in self._items:
            return
        self._items[name] = data
        self.bytes += len(data)
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= len(old)

    def evict_prefix(self, prefix: str) -> int:
        gone = [name for name in self._items if name.startswith(prefix)]
        for name in gone:
            self.bytes -= len(self._items.pop(name))
        return len(gone)


@dataclass(frozen=True, slots=True)
class Version:
    """One version of one object, as its slices are named."""

    key: str
    etag: str
    size: int
    prefix: str  # its slice files' names, before the index


class SliceCache:
    def __init__(
        self,
        origin: Origin,
        directory: Path,
        max_bytes: int,
        slice_bytes: int,
        memory_bytes: int,
        wait_max: float,
    ) -> None:
        self.origin = origin
        self.slice_bytes = slice_bytes
        self.max_bytes = max_bytes
        self.enabled = max_bytes >= _MIN_SLICES * slice_bytes
        self.memory = SliceMemory(memory_bytes)
        self.estimate = 0  # bytes in the directory, as of the last scan plus our own adds
        self._files = SliceFiles(directory) if self.enabled else None
        self._wait_max = wait_max  # then a waiter reads S3 itself (a filler that hung)
        self._loads: dict[str, asyncio.Task[tuple[bytes, str]]] = {}
        self._trimming: asyncio.Task[None] | None = None
        self._trim_again = False  # slices were added while a trim was scanning
        self._versions: dict[tuple[str, str], Version] = {}

    @property
    def filling(self) -> int:
        """Slices this process is loading (from disk, another process's fill, or S3)."""
        return len(self._loads)

    def admits(self, size: int) -> bool:
        return self.enabled and size > 0

    def version(self, key: str, etag: str, size: int) -> Version:
        # Remembered: naming a version hashes its key and ETag, on every request otherwise.
        v = self._versions.get((key, etag))
        if v is None or v.size != size:
            if len(self._versions) >= _MAX_VERSIONS:
                self._versions.clear()
            v = Version(key, etag, size, version_prefix(key, etag, self.slice_bytes))
            self._versions[(key, etag)] = v
        return v

    # -- reading -------------------------------------------------------------------------

    async def get(self, v: Version, index: int) -> tuple[bytes, str]:
        """Slice `index` of the version, and where it came from: "memory", "disk" or "miss"
        (S3, by this process or, for a load under way, by another request's)."""
        name = v.prefix + str(index)
        data = self.memory.get(name)
        if data is not None:
            if self._files is not None:
                self._files.touch(name)  # hot in memory: keep the disk copy off the LRU's end
            return data, "memory"
        task = self._loads.get(name) or self._start(v, index, name)
        # Shielded: a client that leaves does not cancel a load other requests may share.
        return await asyncio.shield(task)

    def prefetch(self, v: Version, index: int) -> None:
        """Start loading a slice the request will need next (while it sends this one)."""
        name = v.prefix + str(index)
        if name not in self._loads and self.memory.get(name) is None:
            self._start(v, index, name)

    def _start(self, v: Version, index: int, name: str) -> asyncio.Task[tuple[bytes, str]]:
        task = asyncio.get_running_loop().create_task(self._load(v, index, name))
        self._loads[name] = task
        task.add_done_callback(lambda t: self._loaded(name, t))
        return task

    def _loaded(self, name: str, task: asyncio.Task[tuple[bytes, str]]) -> None:
        if self._loads.get(name) is task:
            del self._loads[name]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away

    async def _load(self, v: Version, index: int, name: str) -> tuple[bytes, str]:
        files = self._files
        assert files is not None  # get() is only called when enabled
        length = slices.length(index, v.size, self.slice_bytes)
        data = files.read(name, length)
        if data is not None:
            return self._keep(name, data), "disk"
        lock = files.lock(name)
        try:
            try:
                data = await self._wait_for_fill(lock, name, length)
            except OSError as exc:  # no lock file (a full disk, too many files): go alone
                log.warning("slice lock unavailable", error=str(exc))
            if data is not None:
                return self._keep(name, data), "disk"
            data = await self._fill(v, index, name, length)
            return self._keep(name, data), "miss"
        finally:
            lock.release()

    async def _wait_for_fill(self, lock: SliceLock, name: str, length: int) -> bytes | None:
        """Take the slice's lock, or wait for the process holding it to finish: the slice's
        bytes if it did, None when this process should fill it (lock taken, or waited too
        long for a filler that hangs)."""
        assert self._files is not None
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._wait_max
        delay = _POLL_MIN
        while not lock.try_acquire():
            if loop.time() >= give_up:
                log.warning("slice fill elsewhere is taking too long: reading S3 too")
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
            data = self._files.read(name, length)
            if data is not None:
                return data
        # Ours now; a filler may have finished between our first look and the lock.
        return self._files.read(name, length)

    async def _fill(self, v: Version, index: int, name: str, length: int) -> bytes:
        files = self._files
        assert files is not None
        first, last = slices.bounds(index, v.size, self.slice_bytes)
        writer = files.writer()
        try:
            data = await self.origin.fetch_range(
                v.key, first, last, v.size, writer.write if writer is not None else None
            )
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            if writer.written == length and writer.commit(files.path(name)):
                self.estimate += length
                if self.estimate > self.max_bytes:
                    self.trim_soon()
            else:
                writer.abort()
        return data

    def _keep(self, name: str, data: bytes) -> bytes:
        self.memory.put(name, data)
        return data

    # -- upkeep --------------------------------------------------------------------------

    def trim_soon(self) -> None:
        if self._trimming is None or self._trimming.done():
            self._trimming = asyncio.get_running_loop().create_task(self._trim_while_asked())
        else:
            # The scan under way may have missed this slice, and its result replaces the
            # estimate: scan once more after it, or the bound waits for the periodic scan.
            self._trim_again = True

    async def _trim_while_asked(self) -> None:
        while True:
            self._trim_again = False
            await self.trim()
            if not self._trim_again:
                return

    async def trim(self) -> None:
        """Scan the directory (in a thread) and delete the oldest slices beyond the bound."""
        if self._files is not None:
            self.estimate = await asyncio.to_thread(trim, self._files.directory, self.max_bytes)

    async def run_trimmer(self) -> None:
        """Trim now and then: other processes add slices we do not count ourselves."""
        while True:
            try:
                await self.trim()
            except OSError as exc:
                log.warning("slice cache scan failed", error=str(exc))
            await asyncio.sleep(_TRIM_EVERY)

    async def evict(self, object_key: str) -> int:
        """Forget every slice of an object (all ETags); returns the files deleted."""
        prefix = key_prefix(object_key)
        self.memory.evict_prefix(prefix)
        if self._files is None:
            return 0
        return await asyncio.to_thread(unlink_prefix, self._files.directory, prefix)

    async def close(self) -> None:
        loads = list(self._loads.values())
        for task in loads:
            task.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
        if self._trimming is not None:
            self._trimming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimming
