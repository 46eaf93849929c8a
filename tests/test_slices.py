"""Slice arithmetic: which fixed-size slices hold a byte range (pure, no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdn_edge import slices

MiB = 1024 * 1024


def test_an_object_has_as_many_slices_as_it_takes_to_hold_it() -> None:
    assert slices.count(1, MiB) == 1
    assert slices.count(MiB, MiB) == 1
    assert slices.count(MiB + 1, MiB) == 2
    assert slices.count(18 * MiB, MiB) == 18


def test_a_slice_holds_its_bytes_and_the_last_one_is_shorter() -> None:
    size = 3 * MiB + 17
    assert slices.bounds(0, size, MiB) == (0, MiB - 1)
    assert slices.bounds(2, size, MiB) == (2 * MiB, 3 * MiB - 1)
    assert slices.bounds(3, size, MiB) == (3 * MiB, size - 1)
    assert slices.length(3, size, MiB) == 17
    with pytest.raises(ValueError):
        slices.bounds(4, size, MiB)
    with pytest.raises(ValueError):
        slices.bounds(-1, size, MiB)


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        (0, 0, [(0, 0, 1)]),  # one byte: one slice
        (MiB - 1, MiB, [(0, MiB - 1, 1), (1, 0, 1)]),  # two bytes across a boundary
        (MiB, 2 * MiB - 1, [(1, 0, MiB)]),  # exactly one slice
        (10, 3 * MiB + 4, [(0, 10, MiB - 10), (1, 0, MiB), (2, 0, MiB), (3, 0, 5)]),
    ],
)
def test_a_range_is_cut_into_the_pieces_of_the_slices_that_hold_it(
    first: int, last: int, expected: list[tuple[int, int, int]]
) -> None:
    assert list(slices.pieces(first, last, MiB)) == expected
    assert slices.covering(first, last, MiB) == range(expected[0][0], expected[-1][0] + 1)


def test_an_empty_range_has_no_slices() -> None:
    with pytest.raises(ValueError):
        slices.covering(5, 4, MiB)


@given(
    size=st.integers(1, 10_000),
    slice_bytes=st.integers(1, 3000),
    data=st.data(),
)
def test_pieces_put_back_together_are_exactly_the_range(
    size: int, slice_bytes: int, data: st.DataObject
) -> None:
    first = data.draw(st.integers(0, size - 1))
    last = data.draw(st.integers(first, size - 1))
    obj = bytes(i % 251 for i in range(size))
    out = b""
    for index, offset, count in slices.pieces(first, last, slice_bytes):
        lo, hi = slices.bounds(index, size, slice_bytes)
        piece = obj[lo : hi + 1]
        assert offset >= 0 and offset + count <= len(piece)
        out += piece[offset : offset + count]
    assert out == obj[first : last + 1]
