"""Byte ranges (RFC 9110 §14) as the edge reads them: pure rules, no server."""

from __future__ import annotations

import pytest

from cdn_edge.ranges import UNSATISFIABLE, content_range, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, SIZE - 1)),  # open-ended
        ("bytes=-1", (SIZE - 1, SIZE - 1)),  # the last byte
        ("bytes=-100", (SIZE - 100, SIZE - 1)),  # suffix
        ("bytes=-5000", (0, SIZE - 1)),  # a suffix longer than the object: all of it
        ("bytes=990-5000", (990, SIZE - 1)),  # past the end: clamped
        ("bytes=999-999", (999, 999)),
        ("bytes=0-", (0, SIZE - 1)),  # all of it, still a range (players expect a 206)
        ("Bytes=1-2", (1, 2)),  # the unit is case-insensitive
        (" bytes = 1 - 2 ", (1, 2)),  # optional whitespace
        ("bytes=1-2,", (1, 2)),  # empty list elements are allowed
        ("bytes=,1-2", (1, 2)),
    ],
)
def test_one_satisfiable_range_is_its_first_and_last_byte(
    header: str, expected: tuple[int, int]
) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    ["bytes=1000-", "bytes=1000-2000", "bytes=5000-5001", "bytes=-0", "bytes=1000-,2000-"],
)
def test_a_range_only_past_the_end_is_unsatisfiable(header: str) -> None:
    assert parse_range(header, SIZE) is UNSATISFIABLE


@pytest.mark.parametrize(
    "header",
    [
        "",
        "bytes",
        "bytes=",
        "bytes=,",
        "items=0-5",  # another unit
        "bytes=abc",
        "bytes=5",  # no dash
        "bytes=-",  # neither end
        "bytes=5-1",  # last before first
        "bytes=1--2",
        "bytes=+1-2",
        "bytes=0x10-20",
        "bytes=\u0661-\u0662",  # digits of another script (Arabic-Indic)
        "bytes=" + "9" * 20 + "-",  # longer than any size
        "bytes=0-1,abc",  # one bad spec spoils the header
    ],
)
def test_an_unusable_header_means_the_whole_object(header: str) -> None:
    assert parse_range(header, SIZE) is None


def test_several_ranges_get_the_whole_object_unless_none_is_satisfiable() -> None:
    assert parse_range("bytes=0-1,5-9", SIZE) is None
    assert parse_range("bytes=0-1,5000-", SIZE) is None  # one satisfiable: ignore Range
    assert parse_range("bytes=5000-,6000-", SIZE) is UNSATISFIABLE


def test_an_empty_object_satisfies_no_range() -> None:
    assert parse_range("bytes=0-", 0) is UNSATISFIABLE
    assert parse_range("bytes=-10", 0) is UNSATISFIABLE


def test_content_range_names_the_bytes_and_the_size() -> None:
    assert content_range(0, 99, SIZE) == "bytes 0-99/1000"
    assert content_range(999, 999, SIZE) == "bytes 999-999/1000"
