"""Properties of lifetimes as people and clients write them (hypothesis; pure, deterministic):
the CLI's durations (`1d12h`), the upload form's `expires_after` in both of its forms, the
JSON body's, and the contract's range."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.durations import UNITS, format_duration, parse_duration
from shared import rules
from shared.errors import InvalidArgument

seconds = st.integers(0, 10**12)


@settings(max_examples=300)
@given(seconds)
def test_a_formatted_duration_parses_back(n: int) -> None:
    assert parse_duration(format_duration(n)) == n
    assert parse_duration(str(n)) == n


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(UNITS))), min_size=1, max_size=8
    ),
    st.sampled_from(["", " "]),
    st.booleans(),
)
def test_a_duration_is_the_sum_of_its_parts_in_any_case_and_spacing(
    parts: list[tuple[int, str]], gap: str, upper: bool
) -> None:
    text = gap.join(f"{n}{unit.upper() if upper else unit}" for n, unit in parts)
    assert parse_duration(f" {text} ") == sum(n * UNITS[unit] for n, unit in parts)


@settings(max_examples=300)
@given(
    st.text(max_size=20)
    | st.from_regex(r"[0-9smhdw .-]{0,12}", fullmatch=True)
    | st.sampled_from(["²", "\u0661h", "9" * 5000, "9" * 5000 + "s"])
)
def test_any_text_is_a_duration_or_a_value_error(text: str) -> None:
    try:
        assert parse_duration(text) >= 0
    except ValueError as exc:
        assert "not a duration" in str(exc)


# --- expires_after on the wire ----------------------------------------------------------------

FIELDS = ("expires_after", "expires_after[anchor]", "expires_after[seconds]")
field_values = st.one_of(
    st.text(max_size=12),
    st.integers(-(10**20), 10**20).map(str),
    st.just("created_at"),
    st.integers(0, 10**7).map(lambda n: f"  {n}\t"),
)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(FIELDS), field_values))
def test_any_form_fields_give_seconds_none_or_invalid_argument(fields: dict[str, str]) -> None:
    try:
        got = rules.upload_expires_after(fields)
    except InvalidArgument:
        return
    assert got is None or isinstance(got, int)


@settings(max_examples=200)
@given(st.integers(-(10**20), 10**20), st.sampled_from(["", " ", "\t "]))
def test_both_forms_say_the_same_and_together_are_refused(n: int, pad: str) -> None:
    plain = {"expires_after": f"{pad}{n}{pad}"}
    pair = {"expires_after[anchor]": "created_at", "expires_after[seconds]": f"{pad}{n}"}
    assert rules.upload_expires_after(plain) == rules.upload_expires_after(pair) == n
    with pytest.raises(InvalidArgument):
        rules.upload_expires_after({**plain, **pair})
    with pytest.raises(InvalidArgument):
        rules.upload_expires_after({"expires_after[seconds]": str(n)})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@settings(max_examples=300)
@given(json_values)
def test_a_json_expires_after_is_an_integer_null_or_refused(value: object) -> None:
    try:
        got = rules.json_expires_after(value)
    except InvalidArgument:
        assert isinstance(value, bool | str | list | dict) or (
            isinstance(value, float) and not value.is_integer()
        )
        return
    assert got is None or (type(got) is int and got == value)


@settings(max_examples=200)
@given(st.integers(-(10**15), 10**15))
def test_a_json_number_means_the_same_as_its_integer(n: int) -> None:
    assert rules.json_expires_after(json.loads(f"{n}.0")) == rules.json_expires_after(n) == n


LIMITS = rules.Limits(50, 50, 3600, 2_592_000, 1000, 100)


@settings(max_examples=300)
@given(st.integers(-(10**20), 10**20))
def test_the_contracts_range_is_inclusive(n: int) -> None:
    if 3600 <= n <= 2_592_000:
        assert rules.check_expires_after(LIMITS, n) == n
    else:
        with pytest.raises(InvalidArgument, match="between 3600 and 2592000"):
            rules.check_expires_after(LIMITS, n)
