"""The slice cache's directory, shared by every edge process of a machine.

One file per slice, named for the object key, its ETag, the slice size and the slice's index
(`<sha256(key)[:32]>-<sha256(etag)[:16]>-<slice bytes, hex>-<index>`): a changed object (new
ETag) or a changed EDGE_SLICE_BYTES never reads another version's bytes, and deleting an
object's files is deleting a name prefix. Files are written under a temporary name and
renamed into place, so readers see whole slices or nothing. Recency is the file's mtime,
touched on use at most every few seconds; the trim deletes the least recently used slices
once the directory, temporary files included, is over its bound.

Fills are coordinated across processes with one lock file per slice being filled
(`.lock-<slice name>`, `flock(2)`): the process that takes it fetches the slice, renames it
into place, then unlinks the lock file and closes it; the others poll until the slice file
appears or the lock is free. A filler that dies has its lock released by the kernel; its
lock file stays, and the next taker, finding no slice, fills it. Whoever takes a lock checks
that its file is still the one at the path (a filler unlinks the file before releasing it),
so two processes never both believe they hold one slice's lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import time
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

TMP_PREFIX = ".tmp-"
LOCK_PREFIX = ".lock-"
_STALE_SECONDS = 3600.0  # a temporary or lock file this old was left by a crashed process
_TOUCH_EVERY = 5.0  # seconds between mtime updates of a slice in use
_TRIM_TO = 0.9  # trimming goes a little below the bound so it does not run on every add
_MAX_TOUCHED = 16384  # names whose last mtime update this process remembers


def key_prefix(object_key: str) -> str:
    """What every slice file of every version of an object starts with."""
    return hashlib.sha256(object_key.encode()).hexdigest()[:32] + "-"


def version_prefix(object_key: str, etag: str, slice_bytes: int) -> str:
    """What every slice file of one version of an object, at one slice size, starts with;
    the slice's index follows."""
    etag_hash = hashlib.sha256(etag.encode()).hexdigest()[:16]
    return f"{key_prefix(object_key)}{etag_hash}-{slice_bytes:x}-"


class SliceLock:
    """One slice's fill lock, for one process (see the module's docstring)."""

    __slots__ = ("_fd", "_path", "held")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self.held = False

    def try_acquire(self) -> bool:
        """Take the lock if no other process holds it; never blocks."""
        for _ in range(4):  # a lock file replaced under us: open the new one
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            try:
                at_path = os.stat(self._path)
            except FileNotFoundError:
                at_path = None
            mine = os.fstat(self._fd)
            if at_path is not None and (at_path.st_ino, at_path.st_dev) == (
                mine.st_ino,
                mine.st_dev,
            ):
                self.held = True
                return True
            os.close(self._fd)  # a finished filler's file, unlinked: not the lock any more
            self._fd = None
        return False

    def release(self) -> None:
        """Unlink the lock file (if held) and close it, which releases the lock."""
        if self._fd is None:
            return
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self.held = False
        os.close(self._fd)
        self._fd = None


class SliceWriter:
    """One slice's bytes going to a temporary file, renamed into place when whole."""

    __slots__ = ("_fd", "_tmp", "written")

    def __init__(self, directory: Path) -> None:
        self._tmp = directory / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append; a full disk or any write error abandons the file (the bytes still serve)."""
        if self._fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self.written += n
        except OSError as exc:
            log.warning("slice cache write failed", error=str(exc))
            self.abort()

    def commit(self, path: Path) -> bool:
        if self._fd is None:
            return False
        os.close(self._fd)
        self._fd = None
        try:
            os.rename(self._tmp, path)
        except OSError as exc:
            log.warning("slice cache rename failed", error=str(exc))
            self._unlink()
            return False
        return True

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._unlink()

    def _unlink(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


class SliceFiles:
    """The directory of slice files (every call is a few syscalls on local disk)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._touched: dict[str, float] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def read(self, name: str, length: int) -> bytes | None:
        """The slice's bytes, or None if this machine has no whole copy of it."""
        path = self.directory / name
        try:
            with open(path, "rb", buffering=0) as f:
                data = f.read(length + 1)
        except OSError:
            return None
        if len(data) != length:  # not ours, or damaged: never serve it
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        self.touch(name)
        return data

    def touch(self, name: str) -> None:
        """Mark a slice recently used for every process's LRU (at most every few seconds)."""
        now = time.monotonic()
        if now - self._touched.get(name, -_TOUCH_EVERY) < _TOUCH_EVERY:
            return
        with contextlib.suppress(OSError):
            os.utime(self.directory / name)
        if len(self._touched) >= _MAX_TOUCHED:
            self._touched.clear()
        self._touched[name] = now

    def lock(self, name: str) -> SliceLock:
        return SliceLock(self.directory / f"{LOCK_PREFIX}{name}")

    def writer(self) -> SliceWriter | None:
        try:
            return SliceWriter(self.directory)
        except OSError as exc:
            log.warning("slice cache unavailable", error=str(exc))
            return None

    def path(self, name: str) -> Path:
        return self.directory / name


def trim(directory: Path, max_bytes: int) -> int:
    """Delete the least recently used slices until the directory, temporary files included,
    is below its bound; returns the bytes left. Files vanishing meanwhile are fine (another
    process trims or evicts too)."""
    slices: list[tuple[float, int, str]] = []
    total = 0
    now = time.time()
    with os.scandir(directory) as it:
        for entry in it:
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            name = entry.name
            if name.startswith(TMP_PREFIX):
                if now - st.st_mtime > _STALE_SECONDS:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                else:
                    total += st.st_size  # a fill under way takes disk space too
                continue
            if name.startswith(LOCK_PREFIX):
                if now - st.st_mtime > _STALE_SECONDS:
                    _unlink_stale_lock(entry.path)
                continue
            total += st.st_size
            slices.append((st.st_mtime, st.st_size, entry.path))
    if total <= max_bytes:
        return total
    slices.sort()
    target = int(max_bytes * _TRIM_TO)
    for _, size, path in slices:
        if total <= target:
            break
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        total -= size
    return total


def _unlink_stale_lock(path: str) -> None:
    """A crashed filler's lock file: removed only if nobody holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.ENOENT):
            raise
    finally:
        os.close(fd)


def unlink_prefix(directory: Path, prefix: str) -> int:
    """Delete every slice whose name starts with `prefix`; returns how many."""
    gone = 0
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    gone += 1
    return gone
