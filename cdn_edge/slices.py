"""Slice arithmetic: an object cut into fixed-size slices, and which of them hold a byte range.

Slice `i` of an object of `size` bytes holds bytes `i * slice_bytes` up to the next slice's
first byte, the last one being shorter when the size is not a multiple. Pure functions over
integers: the slice cache and its tests share them.
"""

from __future__ import annotations

from collections.abc import Iterator


def count(size: int, slice_bytes: int) -> int:
    """How many slices an object of `size` bytes has."""
    return -(-size // slice_bytes)


def bounds(index: int, size: int, slice_bytes: int) -> tuple[int, int]:
    """The first and last byte of slice `index` of an object of `size` bytes."""
    first = index * slice_bytes
    if index < 0 or first >= size:
        raise ValueError(f"slice {index} is outside an object of {size} bytes")
    return first, min(first + slice_bytes, size) - 1


def length(index: int, size: int, slice_bytes: int) -> int:
    first, last = bounds(index, size, slice_bytes)
    return last - first + 1


def covering(first: int, last: int, slice_bytes: int) -> range:
    """The indexes of the slices that hold bytes first..last (inclusive)."""
    if first < 0 or last < first:
        raise ValueError(f"no bytes in {first}..{last}")
    return range(first // slice_bytes, last // slice_bytes + 1)


def pieces(first: int, last: int, slice_bytes: int) -> Iterator[tuple[int, int, int]]:
    """(slice index, offset in the slice, byte count) for each slice bytes first..last need,
    in order: concatenated, the pieces are exactly the range."""
    for index in covering(first, last, slice_bytes):
        start = index * slice_bytes
        lo = max(first, start)
        hi = min(last, start + slice_bytes - 1)
        yield index, lo - start, hi - lo + 1
