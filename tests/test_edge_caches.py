"""The edge's content caches on their own: the per-process memory LRU, and the slice cache
(per-process memory, per-machine directory, one S3 read per slice and machine) against a
temporary directory and a fake origin (no server). Two `SliceCache`s on one directory are
two edge processes of one machine: each has its own lock file descriptors."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cdn_edge import slice_cache as slice_cache_module
from cdn_edge.cache import MemoryCache
from cdn_edge.origin import OriginError
from cdn_edge.slice_cache import SliceCache, SliceMemory
from cdn_edge.slice_files import LOCK_PREFIX, TMP_PREFIX, key_prefix, trim

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


# --- slices ---------------------------------------------------------------------------------

SLICE = 100  # bytes per slice here (1 MiB in production)


class FakeOrigin:
    """S3 as the slice cache sees it: ranged reads, counted, that a test can hold or fail."""

    def __init__(self, **objects: bytes) -> None:
        self.objects = objects
        self.reads: list[tuple[str, int, int]] = []
        self.gate: asyncio.Event | None = None
        self.failures: list[OriginError] = []  # the next reads' failures, in order

    async def fetch_range(
        self,
        key: str,
        first: int,
        last: int,
        size: int,
        sink: Callable[[bytes], None] | None = None,
    ) -> bytes:
        self.reads.append((key, first, last))
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        data = self.objects[key][first : last + 1]
        if sink is not None:  # in two chunks, as S3's arrive
            sink(data[:10])
            sink(data[10:])
        return data


DATA = bytes(i % 251 for i in range(1050))  # ten whole slices and a short one


def slice_cache(
    origin: FakeOrigin,
    directory: Path,
    max_bytes: int = 100_000,
    memory_bytes: int = 10_000,
    wait_max: float = 10.0,
) -> SliceCache:
    return SliceCache(origin, directory, max_bytes, SLICE, memory_bytes, wait_max)  # type: ignore[arg-type]


def slice_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


async def test_a_slice_is_read_from_s3_once_then_from_memory_or_this_machines_disk(
    tmp_path: Path,
) -> None:
    origin = FakeOrigin(k=DATA)
    one = slice_cache(origin, tmp_path)
    v = one.version("k", ETAG, len(DATA))
    assert await one.get(v, 3) == (DATA[300:400], "miss")
    assert origin.reads == [("k", 300, 399)]  # one ranged read of one slice
    assert await one.get(v, 3) == (DATA[300:400], "memory")
    other = slice_cache(origin, tmp_path)  # another process of the machine
    assert await other.get(other.version("k", ETAG, len(DATA)), 3) == (DATA[300:400], "disk")
    assert await one.get(v, 10) == (DATA[1000:], "miss")  # the short last slice
    assert len(origin.reads) == 2 and len(slice_files(tmp_path)) == 2
    assert os.listdir(tmp_path) == slice_files(tmp_path)  # no temporary or lock file left


async def test_concurrent_misses_in_one_process_share_one_read(tmp_path: Path) -> None:
    origin = FakeOrigin(k=DATA)
    origin.gate = asyncio.Event()
    cache = slice_cache(origin, tmp_path)
    v = cache.version("k", ETAG, len(DATA))
    waiters = [asyncio.create_task(cache.get(v, 0)) for _ in range(5)]
    await until_true(lambda: len(origin.reads) == 1)
    waiters[0].cancel()  # a client that leaves does not cancel the shared read
    origin.gate.set()
    results = await asyncio.gather(*waiters[1:])
    assert {data for data, _ in results} == {DATA[:100]}
    assert len(origin.reads) == 1


async def test_concurrent_misses_in_two_processes_share_one_read_through_the_lock_file(
    tmp_path: Path,
) -> None:
    origin = FakeOrigin(k=DATA)
    origin.gate = asyncio.Event()
    one, other = slice_cache(origin, tmp_path), slice_cache(origin, tmp_path)
    filling = asyncio.create_task(one.get(one.version("k", ETAG, len(DATA)), 5))
    await until_true(lambda: len(origin.reads) == 1)  # `one` holds the slice's lock
    assert any(n.startswith(LOCK_PREFIX) for n in os.listdir(tmp_path))
    waiting = asyncio.create_task(other.get(other.version("k", ETAG, len(DATA)), 5))
    await asyncio.sleep(0.02)  # a few of its polls (the outcome does not depend on it)
    assert not waiting.done()
    origin.gate.set()
    assert await filling == (DATA[500:600], "miss")
    assert await waiting == (DATA[500:600], "disk")
    assert len(origin.reads) == 1
    assert os.listdir(tmp_path) == slice_files(tmp_path)  # the filler unlinked its lock file


async def test_a_fill_that_fails_elsewhere_lets_a_waiting_process_read_s3_itself(
    tmp_path: Path,
) -> None:
    origin = FakeOrigin(k=DATA)
    origin.gate = asyncio.Event()
    one, other = slice_cache(origin, tmp_path), slice_cache(origin, tmp_path)
    filling = asyncio.create_task(one.get(one.version("k", ETAG, len(DATA)), 2))
    await until_true(lambda: len(origin.reads) == 1)
    waiting = asyncio.create_task(other.get(other.version("k", ETAG, len(DATA)), 2))
    origin.failures.append(OriginError(502, "S3 reset"))
    origin.gate.set()
    with pytest.raises(OriginError):
        await filling
    assert await waiting == (DATA[200:300], "miss")
    assert len(origin.reads) == 2
    assert not [n for n in os.listdir(tmp_path) if n.startswith(TMP_PREFIX)]


async def test_a_crashed_fillers_lock_file_does_not_hold_anyone_back(tmp_path: Path) -> None:
    origin = FakeOrigin(k=DATA)
    cache = slice_cache(origin, tmp_path)
    v = cache.version("k", ETAG, len(DATA))
    (tmp_path / f"{LOCK_PREFIX}{v.prefix}4").touch()  # left behind; the kernel freed the lock
    assert await cache.get(v, 4) == (DATA[400:500], "miss")
    assert os.listdir(tmp_path) == slice_files(tmp_path)


async def test_a_filler_that_hangs_is_waited_for_only_so_long(tmp_path: Path) -> None:
    origin = FakeOrigin(k=DATA)
    cache = slice_cache(origin, tmp_path, wait_max=0.05)
    v = cache.version("k", ETAG, len(DATA))
    fd = os.open(tmp_path / f"{LOCK_PREFIX}{v.prefix}4", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process holds it and never finishes
        assert await cache.get(v, 4) == (DATA[400:500], "miss")
    finally:
        os.close(fd)


async def test_another_etag_never_reads_the_old_versions_slices(tmp_path: Path) -> None:
    old, new = DATA, bytes(reversed(DATA))
    origin = FakeOrigin(k=old)
    cache = slice_cache(origin, tmp_path)
    assert (await cache.get(cache.version("k", ETAG, len(old)), 1))[0] == old[100:200]
    origin.objects["k"] = new  # replaced under the same key
    fresh = slice_cache(origin, tmp_path)
    assert await cache.get(cache.version("k", '"e2"', len(new)), 1) == (new[100:200], "miss")
    assert await fresh.get(fresh.version("k", '"e2"', len(new)), 1) == (new[100:200], "disk")
    assert (await fresh.get(fresh.version("k", ETAG, len(old)), 1)) == (old[100:200], "disk")
    assert len(origin.reads) == 2  # the new version once, whatever process


async def test_a_slice_file_of_the_wrong_length_is_never_served(tmp_path: Path) -> None:
    origin = FakeOrigin(k=DATA)
    cache = slice_cache(origin, tmp_path)
    v = cache.version("k", ETAG, len(DATA))
    (tmp_path / f"{v.prefix}7").write_bytes(b"short")  # damaged
    assert await cache.get(v, 7) == (DATA[700:800], "miss")
    assert (tmp_path / f"{v.prefix}7").read_bytes() == DATA[700:800]


def test_slices_in_memory_are_bounded_least_recently_used_first() -> None:
    m = SliceMemory(max_bytes=300)
    for name in ("a", "b", "c"):
        m.put(name, b"x" * 100)
    assert m.get("a") is not None
    m.put("d", b"x" * 100)
    assert m.get("b") is None and m.bytes == 300 and len(m) == 3
    m.put("big", b"x" * 301)  # larger than the whole bound: not kept
    assert m.get("big") is None
    assert m.evict_prefix("a") == 1 and m.bytes == 200


def test_the_slice_cache_is_off_below_a_few_slices_of_disk(tmp_path: Path) -> None:
    off = slice_cache(FakeOrigin(), tmp_path / "off", max_bytes=3 * SLICE)
    assert not off.admits(1) and not (tmp_path / "off").exists()
    on = slice_cache(FakeOrigin(), tmp_path / "on", max_bytes=4 * SLICE)
    assert on.admits(1) and not on.admits(0)


def test_the_trim_counts_fills_under_way_toward_the_bound(tmp_path: Path) -> None:
    for i in range(6):  # six slices of 100 bytes, oldest first
        path = tmp_path / f"s{i}"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + i, 1000 + i))
    (tmp_path / f"{TMP_PREFIX}1-fill").write_bytes(b"x" * 450)  # a fill under way
    left = trim(tmp_path, max_bytes=1000)  # 1050 bytes on disk: over the bound
    on_disk = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert left == on_disk <= 900  # trimmed to 90 % of the bound, the fill included
    assert slice_files(tmp_path) == ["s2", "s3", "s4", "s5"]  # the two oldest went
    assert (tmp_path / f"{TMP_PREFIX}1-fill").exists()  # a fill under way is never deleted


def test_the_trim_removes_leftovers_of_crashed_processes_only(tmp_path: Path) -> None:
    stale_tmp, fresh_tmp = tmp_path / f"{TMP_PREFIX}1-a", tmp_path / f"{TMP_PREFIX}2-b"
    stale_lock, held_lock = tmp_path / f"{LOCK_PREFIX}x", tmp_path / f"{LOCK_PREFIX}y"
    for p in (stale_tmp, fresh_tmp, stale_lock, held_lock):
        p.write_bytes(b"x")
    old = time.time() - 2 * 3600
    for p in (stale_tmp, stale_lock, held_lock):
        os.utime(p, (old, old))
    fd = os.open(held_lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a fill under way, however old its file looks
        assert trim(tmp_path, max_bytes=1000) == 1  # the fresh temporary file's byte
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh_tmp.name, held_lock.name])


async def test_evicting_an_object_drops_every_version_from_memory_and_disk(
    tmp_path: Path,
) -> None:
    origin = FakeOrigin(k=DATA, other=DATA)
    cache = slice_cache(origin, tmp_path)
    for etag in (ETAG, '"e2"'):
        await cache.get(cache.version("k", etag, len(DATA)), 0)
    await cache.get(cache.version("other", ETAG, len(DATA)), 0)
    assert await cache.evict("k") == 2
    assert all(not n.startswith(key_prefix("k")) for n in os.listdir(tmp_path))
    assert len(cache.memory) == 1
    assert await cache.get(cache.version("other", ETAG, len(DATA)), 0) == (DATA[:100], "memory")


async def until_true(check: Callable[[], bool]) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


async def test_slices_added_while_a_trim_scans_are_trimmed_right_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan's result replaces the process's estimate: slices committed after the scan and
    before that are not in it, so the cache scans again instead of leaving the directory
    over its bound until the periodic scan."""
    scanned, release = threading.Event(), threading.Event()
    scans = 0

    def held_first_scan(directory: Path, max_bytes: int) -> int:
        nonlocal scans
        scans += 1
        left = trim(directory, max_bytes)
        if scans == 1:  # this scan has counted; hold it while more slices arrive
            scanned.set()
            release.wait(5)
        return left

    monkeypatch.setattr(slice_cache_module, "trim", held_first_scan)
    cache = slice_cache(FakeOrigin(k=DATA), tmp_path, max_bytes=4 * SLICE)
    v = cache.version("k", ETAG, len(DATA))
    for index in range(5):  # the fifth goes past the bound: a trim starts
        await cache.get(v, index)
    await asyncio.to_thread(scanned.wait, 5)
    for index in range(5, 7):  # committed after the scan counted
        await cache.get(v, index)
    release.set()

    def on_disk() -> int:
        return sum(p.stat().st_size for p in tmp_path.iterdir())

    await until_true(lambda: scans >= 2 and on_disk() <= 4 * SLICE)
