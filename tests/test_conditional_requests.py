"""Conditional requests (RFC 9110 §13) as the edge decides them: pure rules, no server."""

from __future__ import annotations

import pytest

from cdn_edge.conditional import (
    Conditions,
    Outcome,
    evaluate,
    http_date,
    parse_http_date,
    range_applies,
)

ETAG = '"abc123"'
MODIFIED = 1_700_000_000  # the representation's Last-Modified, in Unix seconds
AT = http_date(MODIFIED)
BEFORE = http_date(MODIFIED - 3600)
AFTER = http_date(MODIFIED + 3600)


def outcome(**headers: str) -> Outcome:
    return evaluate(Conditions(**headers), ETAG, MODIFIED)


def test_no_condition_sends_the_representation() -> None:
    assert outcome() is Outcome.SEND


@pytest.mark.parametrize("value", [ETAG, f'"x", {ETAG}', f"W/{ETAG}", "*", f' "x" ,{ETAG} '])
def test_if_none_match_with_our_tag_is_not_modified(value: str) -> None:
    # Weak comparison (§13.1.2): a weak tag with our opaque value matches too.
    assert outcome(if_none_match=value) is Outcome.NOT_MODIFIED


@pytest.mark.parametrize("value", ['"x"', 'W/"x", "y"', "garbage", '"abc123'])
def test_if_none_match_with_other_tags_or_garbage_sends(value: str) -> None:
    assert outcome(if_none_match=value) is Outcome.SEND


def test_if_modified_since_is_not_modified_unless_the_file_is_newer() -> None:
    assert outcome(if_modified_since=AT) is Outcome.NOT_MODIFIED
    assert outcome(if_modified_since=AFTER) is Outcome.NOT_MODIFIED
    assert outcome(if_modified_since=BEFORE) is Outcome.SEND
    assert outcome(if_modified_since="not a date") is Outcome.SEND  # ignored when invalid


def test_if_none_match_wins_over_if_modified_since() -> None:
    assert outcome(if_none_match='"x"', if_modified_since=AT) is Outcome.SEND
    assert outcome(if_none_match=ETAG, if_modified_since=BEFORE) is Outcome.NOT_MODIFIED


@pytest.mark.parametrize("value", [ETAG, f'"x", {ETAG}', "*"])
def test_if_match_with_our_tag_sends(value: str) -> None:
    assert outcome(if_match=value) is Outcome.SEND


@pytest.mark.parametrize("value", ['"x"', f"W/{ETAG}", "garbage"])
def test_if_match_with_another_or_a_weak_tag_fails(value: str) -> None:
    # Strong comparison: a weak tag never matches, even with our opaque value.
    assert outcome(if_match=value) is Outcome.PRECONDITION_FAILED


def test_if_unmodified_since_fails_only_when_the_file_is_newer() -> None:
    assert outcome(if_unmodified_since=BEFORE) is Outcome.PRECONDITION_FAILED
    assert outcome(if_unmodified_since=AT) is Outcome.SEND
    assert outcome(if_unmodified_since="not a date") is Outcome.SEND


def test_if_match_wins_over_if_unmodified_since_and_over_if_none_match() -> None:
    assert outcome(if_match=ETAG, if_unmodified_since=BEFORE) is Outcome.SEND
    assert outcome(if_match='"x"', if_none_match=ETAG) is Outcome.PRECONDITION_FAILED


def test_if_range_allows_the_range_only_for_the_current_validator() -> None:
    assert range_applies(None, ETAG, MODIFIED)
    assert range_applies(ETAG, ETAG, MODIFIED)
    assert range_applies(AT, ETAG, MODIFIED)  # an exact date match
    assert not range_applies('"stale"', ETAG, MODIFIED)
    assert not range_applies(f"W/{ETAG}", ETAG, MODIFIED)  # weak tags never match
    assert not range_applies(AFTER, ETAG, MODIFIED)  # dates match exactly or not at all
    assert not range_applies(BEFORE, ETAG, MODIFIED)
    assert not range_applies("garbage", ETAG, MODIFIED)


@pytest.mark.parametrize(
    "value",
    [
        "Tue, 14 Nov 2023 22:13:20 GMT",  # IMF-fixdate
        "Tuesday, 14-Nov-23 22:13:20 GMT",  # RFC 850
        "Tue Nov 14 22:13:20 2023",  # asctime
    ],
)
def test_http_dates_are_read_in_all_three_formats(value: str) -> None:
    assert parse_http_date(value) == MODIFIED


def test_http_date_renders_imf_fixdate_and_reads_back() -> None:
    assert AT == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert parse_http_date(AT) == MODIFIED
    assert parse_http_date("") is None and parse_http_date("yesterday") is None
