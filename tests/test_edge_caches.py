"""The edge's content caches on their own: the per-process memory LRU and the per-machine disk
LRU, against a temporary directory (no server)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cdn_edge.cache import DiskCache, MemoryCache, _key_prefix

KEY, ETAG = "objects/team/file_a", '"e1"'


# --- memory ---------------------------------------------------------------------------------


def test_memory_cache_returns_bytes_only_for_the_same_etag() -> None:
    m = MemoryCache(max_bytes=100, object_max=50)
    m.put(KEY, ETAG, b"x" * 10)
    assert m.get(KEY, ETAG) == b"x" * 10
    assert m.get(KEY, '"e2"') is None  # a changed object is never served stale
    assert m.get("objects/other", ETAG) is None


def test_memory_cache_replaces_an_objects_older_version() -> None:
    m = MemoryCache(max_bytes=100, object_max=50)
    m.put(KEY, ETAG, b"a" * 10)
    m.put(KEY, '"e2"', b"b" * 20)
    assert (len(m), m.bytes) == (1, 20)
    assert m.get(KEY, '"e2"') == b"b" * 20 and m.get(KEY, ETAG) is None


def test_memory_cache_admits_only_objects_within_the_object_bound() -> None:
    m = MemoryCache(max_bytes=100, object_max=50)
    assert m.admits(1) and m.admits(50)
    assert not m.admits(0) and not m.admits(51)
    m.put(KEY, ETAG, b"x" * 51)
    assert len(m) == 0 and m.bytes == 0
    assert MemoryCache(max_bytes=30, object_max=50).object_max == 30  # never above the total


def test_memory_cache_evicts_the_least_recently_used_first() -> None:
    m = MemoryCache(max_bytes=30, object_max=10)
    for k in ("a", "b", "c"):
        m.put(k, ETAG, b"x" * 10)
    assert m.get("a", ETAG) is not None  # "a" is now the most recent
    m.put("d", ETAG, b"x" * 10)
    assert m.get("b", ETAG) is None  # the least recently used went
    assert all(m.get(k, ETAG) is not None for k in ("a", "c", "d"))
    assert m.bytes == 30


def test_memory_cache_evict_forgets_an_object_and_its_size() -> None:
    m = MemoryCache(max_bytes=100, object_max=50)
    m.put(KEY, ETAG, b"x" * 10)
    assert m.evict(KEY) is True and m.evict(KEY) is False
    assert (len(m), m.bytes, m.get(KEY, ETAG)) == (0, 0, None)


# --- disk -----------------------------------------------------------------------------------


def fill(cache: DiskCache, key: str, etag: str, data: bytes) -> bool:
    writer = cache.writer(key, etag, len(data))
    assert writer is not None
    writer.write(data[: len(data) // 2])
    writer.write(memoryview(data)[len(data) // 2 :])
    return writer.commit()


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_disk_cache_serves_a_committed_copy_for_the_same_etag_and_size(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=4000, object_max=1000)
    assert cache.open(KEY, ETAG, 600) is None  # nothing yet
    assert fill(cache, KEY, ETAG, b"y" * 600)
    f = cache.open(KEY, ETAG, 600)
    assert f is not None
    with f:
        assert f.read() == b"y" * 600
    assert cache.open(KEY, '"e2"', 600) is None  # another version
    assert cache.open(KEY, ETAG, 601) is None  # a size that disagrees with the record
    assert cache.estimate == 600


def test_disk_cache_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=4000, object_max=1000)
    writer = cache.writer(KEY, ETAG, 600)
    assert writer is not None
    writer.write(b"z" * 300)
    assert cache.open(KEY, ETAG, 600) is None  # only a temporary name exists so far
    assert all(name.startswith(".tmp-") for name in files(tmp_path))
    writer.write(b"z" * 300)
    assert writer.commit()
    assert cache.open(KEY, ETAG, 600) is not None


def test_disk_cache_drops_a_short_or_aborted_fill(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=4000, object_max=1000)
    short = cache.writer(KEY, ETAG, 600)
    assert short is not None
    short.write(b"z" * 599)
    assert short.commit() is False  # fewer bytes than the record: not kept
    aborted = cache.writer(KEY, ETAG, 600)
    assert aborted is not None  # the failed fill no longer blocks another
    aborted.write(b"z" * 100)
    aborted.abort()
    assert files(tmp_path) == [] and cache.estimate == 0


def test_disk_cache_writes_one_copy_at_a_time_per_object(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=4000, object_max=1000)
    first = cache.writer(KEY, ETAG, 600)
    assert first is not None
    assert cache.writer(KEY, ETAG, 600) is None  # already being written by this process
    assert cache.writer("objects/other", ETAG, 600) is not None
    first.abort()
    assert cache.writer(KEY, ETAG, 600) is not None


def test_disk_cache_admits_objects_up_to_a_quarter_of_its_size(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=4000, object_max=4000)
    assert cache.object_max == 1000
    assert cache.admits(1000) and not cache.admits(1001) and not cache.admits(0)
    assert cache.writer(KEY, ETAG, 1001) is None and cache.open(KEY, ETAG, 1001) is None
    off = DiskCache(tmp_path / "off", max_bytes=0, object_max=1000)
    assert not off.admits(1) and not (tmp_path / "off").exists()


async def test_disk_cache_trims_the_least_recently_used_files_to_below_its_bound(
    tmp_path: Path,
) -> None:
    cache = DiskCache(tmp_path, max_bytes=4000, object_max=1000)
    keys = [f"objects/k{i}" for i in range(4)]
    for i, key in enumerate(keys):
        assert fill(cache, key, ETAG, b"x" * 1000)
        # Recency is the file's mtime; set it explicitly so the order does not depend on
        # the clock's resolution.
        [path] = [p for p in tmp_path.iterdir() if p.name.startswith(_key_prefix(key))]
        os.utime(path, (1000 + i, 1000 + i))
    assert len(files(tmp_path)) == 4  # exactly at the bound: nothing trimmed
    assert fill(cache, "objects/k4", ETAG, b"x" * 1000)  # over it now
    await cache.trim()
    assert cache.estimate <= 0.9 * 4000
    assert cache.open(keys[0], ETAG, 1000) is None  # the oldest went
    assert cache.open(keys[1], ETAG, 1000) is None
    assert cache.open("objects/k4", ETAG, 1000) is not None  # the newest stayed


async def test_disk_cache_scan_removes_stale_temporary_files_only(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=4000, object_max=1000)
    stale, fresh = tmp_path / ".tmp-1-stale", tmp_path / ".tmp-2-fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - 2 * 3600  # a crashed process's leftover
    os.utime(stale, (old, old))
    await cache.trim()
    assert not stale.exists() and fresh.exists()
    assert cache.estimate == 0  # temporary files are not cached bytes


async def test_disk_cache_evict_deletes_every_version_of_an_object(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=4000, object_max=1000)
    assert fill(cache, KEY, ETAG, b"a" * 100)
    assert fill(cache, KEY, '"e2"', b"b" * 100)
    assert fill(cache, "objects/other", ETAG, b"c" * 100)
    reader = cache.open(KEY, ETAG, 100)
    assert reader is not None
    assert await cache.evict(KEY) == 2
    assert cache.open(KEY, ETAG, 100) is None and cache.open(KEY, '"e2"', 100) is None
    assert cache.open("objects/other", ETAG, 100) is not None
    with reader:  # a response under way keeps reading the deleted file
        assert reader.read() == b"a" * 100


def test_disk_cache_is_shared_by_processes_on_one_directory(tmp_path: Path) -> None:
    one = DiskCache(tmp_path, max_bytes=4000, object_max=1000)
    other = DiskCache(tmp_path, max_bytes=4000, object_max=1000)  # another edge process
    assert fill(one, KEY, ETAG, b"q" * 500)
    f = other.open(KEY, ETAG, 500)
    assert f is not None
    f.close()
