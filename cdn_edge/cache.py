"""The memory cache: small objects' bytes in process memory.

Bytes only, keyed by object key + ETag (a changed object can never be served stale),
bounded by size with least-recently-used eviction, and emptied of an object when its file
is deleted. It holds no authorisation: every request checks its token in Redis before any
cached byte is sent. Larger objects go to the slice cache (`cdn_edge.slice_cache`).
"""

from __future__ import annotations

from collections import OrderedDict


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
