"""Properties of the edge's (and the API's) Range and conditional-request parsing (hypothesis;
pure, deterministic, no servers), held against RFC 9110 written out as a small model."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cdn_edge import conditional, ranges
from cdn_edge.conditional import Conditions, Outcome

sizes = st.integers(0, 10**12)
positions = st.integers(0, 10**13)
header_text = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.sampled_from(["bytes", "Bytes", "items", "=", "-", ",", " ", "0", "7", "99", "-5"]),
        max_size=12,
    ).map("".join),
)


def model(spec: str, size: int) -> tuple[int, int] | str | None:
    """RFC 9110 §14.1.2 for one well-formed range-spec: (first, last), 'unsatisfiable',
    or None for an invalid one."""
    first_text, _, last_text = spec.partition("-")
    if not first_text:
        n = int(last_text)
        return "unsatisfiable" if n == 0 or size == 0 else (max(0, size - n), size - 1)
    first = int(first_text)
    last = int(last_text) if last_text else None
    if last is not None and last < first:
        return None
    if first >= size:
        return "unsatisfiable"
    return (first, size - 1 if last is None else min(last, size - 1))


specs = st.one_of(
    st.tuples(positions, st.none() | positions).map(
        lambda t: f"{t[0]}-{'' if t[1] is None else t[1]}"
    ),
    positions.map(lambda n: f"-{n}"),
)


@settings(max_examples=500)
@given(header_text, sizes)
def test_any_range_header_gets_a_range_inside_the_object_or_none(header: str, size: int) -> None:
    got = ranges.parse_range(header, size)
    if got is not None and got != ranges.UNSATISFIABLE:
        first, last = got
        assert 0 <= first <= last < size


@settings(max_examples=500)
@given(specs, sizes, st.sampled_from(["bytes=", "bytes =", "BYTES= ", " bytes=  "]))
def test_one_range_is_answered_as_rfc_9110_says(spec: str, size: int, prefix: str) -> None:
    expected = model(spec, size)
    got = ranges.parse_range(prefix + spec, size)
    if expected == "unsatisfiable":
        assert got == ranges.UNSATISFIABLE
    else:
        assert got == expected


@settings(max_examples=200)
@given(st.lists(specs, min_size=2, max_size=5), sizes)
def test_several_ranges_get_the_whole_object_unless_none_is_satisfiable(
    specs_: list[str], size: int
) -> None:
    outcomes = [model(s, size) for s in specs_]
    got = ranges.parse_range("bytes=" + ", ".join(specs_), size)
    if None in outcomes:
        assert got is None  # one invalid spec: the header is ignored
    elif all(o == "unsatisfiable" for o in outcomes):
        assert got == ranges.UNSATISFIABLE
    else:
        assert got is None


@settings(max_examples=200)
@given(sizes.filter(bool), st.data())
def test_content_range_names_the_bytes_sent(size: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(0, size - 1))
    last = data.draw(st.integers(first, size - 1))
    value = ranges.content_range(first, last, size)
    assert value == f"bytes {first}-{last}/{size}"
    assert ranges.parse_range(f"bytes={first}-{last}", size) == (first, last)


# --- Conditional requests --------------------------------------------------------------------

opaque = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"'), max_size=16
)
etags = opaque.map(lambda t: f'"{t}"')
times = st.integers(0, 253402300799)  # up to 9999-12-31T23:59:59Z
conditions = st.builds(
    Conditions,
    st.none() | header_text,
    st.none() | header_text,
    st.none() | header_text,
    st.none() | header_text,
    st.none() | header_text,
)


@settings(max_examples=300)
@given(conditions, etags, times)
def test_any_conditional_headers_get_an_outcome(cond: Conditions, etag: str, lm: int) -> None:
    assert conditional.evaluate(cond, etag, lm) in Outcome
    assert conditional.range_applies(cond.if_range, etag, lm) in (True, False)


@settings(max_examples=200)
@given(etags, st.lists(etags, max_size=4), st.integers(0, 4), times)
def test_if_none_match_compares_weakly_and_if_match_strongly(
    etag: str, others: list[str], at: int, lm: int
) -> None:
    assume(etag not in others)
    for tag, strong in ((etag, True), ("W/" + etag, False)):
        listed = ", ".join([*others[:at], tag, *others[at:]])
        assert conditional.evaluate(Conditions(if_none_match=listed), etag, lm) is (
            Outcome.NOT_MODIFIED
        )
        matched = conditional.evaluate(Conditions(if_match=listed), etag, lm)
        assert matched is (Outcome.SEND if strong else Outcome.PRECONDITION_FAILED)
    if others:
        unlisted = ", ".join(others)
        assert conditional.evaluate(Conditions(if_none_match=unlisted), etag, lm) is Outcome.SEND
        assert conditional.evaluate(Conditions(if_match=unlisted), etag, lm) is (
            Outcome.PRECONDITION_FAILED
        )


@settings(max_examples=200)
@given(times, times, etags)
def test_dates_compare_by_the_second_and_tags_win_over_dates(
    lm: int, since: int, etag: str
) -> None:
    date = conditional.http_date(since)
    assert conditional.parse_http_date(date) == since
    modified = conditional.evaluate(Conditions(if_modified_since=date), etag, lm)
    assert modified is (Outcome.NOT_MODIFIED if lm <= since else Outcome.SEND)
    unmodified = conditional.evaluate(Conditions(if_unmodified_since=date), etag, lm)
    assert unmodified is (Outcome.PRECONDITION_FAILED if lm > since else Outcome.SEND)
    # With a tag to compare, the date is not consulted (RFC 9110 §13.2.2).
    other = conditional.evaluate(
        Conditions(if_none_match='"not-' + etag.strip('"') + '"', if_modified_since=date),
        etag,
        lm,
    )
    assert other is Outcome.SEND


@settings(max_examples=200)
@given(etags, etags, times, times)
def test_if_range_needs_the_exact_strong_tag_or_date(
    etag: str, other: str, lm: int, when: int
) -> None:
    assert conditional.range_applies(None, etag, lm)
    assert conditional.range_applies(etag, etag, lm)
    assert not conditional.range_applies("W/" + etag, etag, lm)
    assert conditional.range_applies(other, etag, lm) is (other == etag)
    assert conditional.range_applies(conditional.http_date(when), etag, lm) is (when == lm)
