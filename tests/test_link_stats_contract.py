"""The per-link counters' Redis format, as the edge writes it and the worker reads it."""

from __future__ import annotations

from shared.link_stats import Folded, parse


def test_fields_are_grouped_by_token_and_malformed_ones_skipped() -> None:
    raw = {
        b"h:tokA": b"3",
        b"b:tokA": b"300",
        b"t:tokA": b"1700000000000",
        b"h:tokB": b"1",
        b"x:tokB": b"9",
        b"h:": b"5",
        b"h:tokC": b"not-a-number",
        b"\xff:tokD": b"1",
    }
    found = sorted(parse(raw), key=lambda f: f.token)
    assert found == [Folded("tokA", 3, 300, 1700000000000), Folded("tokB", 1, 0, None)]


def test_a_token_with_a_colon_keeps_it() -> None:
    assert parse({b"h:a:b": b"2"}) == [Folded("a:b", 2, 0, None)]
