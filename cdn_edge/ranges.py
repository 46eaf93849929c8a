"""Byte ranges (RFC 9110 §14): one `Range` header against an object's size.

Only single ranges are answered with 206. A request for several ranges gets the whole object
(200): a server may ignore Range, and a multipart/byteranges body buys nothing for the
clients we serve (browsers, video players and download managers ask for one range at a time).
"""

from __future__ import annotations

from typing import Final

# The outcome when Range asks only for bytes the object does not have: 416.
UNSATISFIABLE: Final = (-1, -1)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """`(first, last)` inclusive for one satisfiable range, `UNSATISFIABLE`, or None.

    None means "serve the whole object": no usable Range (bad syntax, another unit, several
    ranges of which at least one is satisfiable).
    """
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec.split(",")]
    specs = [s for s in specs if s]  # empty list elements are allowed (RFC 9110 §5.6.1)
    if not specs:
        return None
    ranges: list[tuple[int, int]] = []
    for s in specs:
        r = _one(s, size)
        if r is None:
            return None  # one invalid spec makes the whole header invalid: ignore it
        ranges.append(r)
    satisfiable = [r for r in ranges if r is not UNSATISFIABLE]
    if not satisfiable:
        return UNSATISFIABLE
    if len(ranges) > 1:
        return None
    return satisfiable[0]


def _one(spec: str, size: int) -> tuple[int, int] | None:
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not _digits(last, allow_empty=True) or not _digits(first, allow_empty=True):
        return None
    if not first:  # suffix: the last N bytes
        if not last:
            return None
        n = int(last)
        if n == 0 or size == 0:
            return UNSATISFIABLE
        return (max(0, size - n), size - 1)
    start = int(first)
    if last:
        end = int(last)
        if end < start:
            return None
    else:
        end = size - 1
    if start >= size:
        return UNSATISFIABLE
    return (start, min(end, size - 1))


def _digits(s: str, *, allow_empty: bool) -> bool:
    # str.isdigit accepts other scripts' digits; a range is ASCII only. 19 digits bound int().
    if not s:
        return allow_empty
    return len(s) <= 19 and s.isascii() and s.isdigit()


def content_range(first: int, last: int, size: int) -> str:
    return f"bytes {first}-{last}/{size}"
