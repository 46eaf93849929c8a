"""Properties of the REST request parsing (hypothesis; pure, deterministic, no servers): the
upload form's fields as they arrive part by part, a field's bytes, and the list's query."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from api import upload_form
from api.rest import list_query
from api.upload_form import UploadForm
from shared import pagination, rules
from shared.errors import InvalidArgument

LIMITS = rules.Limits(50, 50, 3600, 2_592_000, 1000, 100)
FILE = ("file", None)
names = st.sampled_from(
    ["purpose", "expires_after", "expires_after[anchor]", "expires_after[seconds]", "other", ""]
)
values = st.one_of(
    st.sampled_from(["", "created_at", "3600", "7200", " 86400 ", "2592001", "-1", "x", "a\x00"]),
    st.integers(0, 3_000_000).map(str),
    st.text(max_size=8),
)
parts = st.lists(st.tuples(names, values), max_size=6)

Outcome = tuple[str, int | None] | None  # (purpose, expires_after), or None: refused


def submit(sequence: list[tuple[str, str | None]]) -> Outcome:
    """Feed the parts to the form as the handler does, in order."""
    form = UploadForm(LIMITS)
    try:
        for name, value in sequence:
            if value is None:
                form.start_file()
            elif form.wants(name):
                form.add_field(name, value)
        return form.purpose(), form.expires_after()
    except InvalidArgument:
        return None


def model(fields: list[tuple[str, str]], files: int) -> Outcome:
    """The form's meaning from all its parts at once, order aside."""
    known = [(n, v) for n, v in fields if n in upload_form.TEXT_FIELDS]
    if files != 1 or len({n for n, _ in known}) < len(known):
        return None
    values_ = dict(known)
    try:
        purpose = rules.check_purpose(values_.get("purpose", ""))
        seconds = rules.upload_expires_after(values_)
        if seconds is not None:
            rules.check_expires_after(LIMITS, seconds)
    except InvalidArgument:
        return None
    return purpose, seconds


@settings(max_examples=300)
@given(parts, st.data())
def test_the_fields_mean_the_same_before_or_after_the_file(
    fields: list[tuple[str, str]], data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(fields)), label="file part at")
    sequence: list[tuple[str, str | None]] = [*fields[:at], FILE, *fields[at:]]
    assert submit(sequence) == model(fields, files=1)


@settings(max_examples=150)
@given(parts, st.integers(0, 6), st.integers(0, 6))
def test_a_form_needs_exactly_one_file_part(fields: list[tuple[str, str]], a: int, b: int) -> None:
    assert submit(list(fields)) is None
    twice: list[tuple[str, str | None]] = [*fields[:a], FILE, *fields[a:]]
    twice.insert(min(b, len(twice)), FILE)
    assert submit(twice) is None


@settings(max_examples=100)
@given(st.integers(3600, 2_592_000), st.integers(0, 3))
def test_a_bad_lifetime_before_the_file_fails_before_its_bytes(n: int, where: int) -> None:
    """Refused at the file part's start, so that 50 MiB are not streamed for nothing."""
    form = UploadForm(LIMITS)
    form.add_field("expires_after", str(n + 2_592_000))
    try:
        form.start_file()
    except InvalidArgument:
        pass
    else:
        raise AssertionError("a lifetime out of range was let through to the bytes")
    ok = UploadForm(LIMITS)
    ok.add_field("expires_after[anchor]", "created_at")
    ok.start_file()  # its seconds may still follow
    ok.add_field("expires_after[seconds]", str(n))
    assert ok.expires_after() == n


charsets = st.sampled_from(["utf-8", "latin-1", "utf-16", "ascii", "no-such-charset", "UTF-8"])


@settings(max_examples=300)
@given(st.binary(max_size=5000), charsets)
def test_a_fields_bytes_become_storable_text_or_invalid_argument(raw: bytes, charset: str) -> None:
    try:
        text = upload_form.decode_field("purpose", raw, charset)
    except InvalidArgument as exc:
        assert exc.message.startswith("form field 'purpose'")
        return
    assert len(raw) <= upload_form.FIELD_LIMIT
    assert "\x00" not in text
    text.encode("utf-8")  # storable


query_values = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["asc", "desc", "ASC", "size", "filename", "created_at", "0", "-1", "100"]),
    st.integers(-(10**30), 10**30).map(str),
    st.just("file_00000000-0000-4000-8000-000000000000"),
)
queries = st.dictionaries(
    st.sampled_from(
        ["limit", "order", "sort_by", "filter", "purpose", "pagination_token", "after", "x"]
    ),
    query_values,
)


@settings(max_examples=300)
@given(queries)
def test_any_list_query_is_checked_or_refused_with_invalid_argument(q: dict[str, str]) -> None:
    try:
        parsed = list_query(q)
    except InvalidArgument:
        return
    assert pagination.is_order(parsed.order) and pagination.is_sort_by(parsed.sort_by)
    assert parsed.after is None or parsed.after == q["after"]
    if "limit" in q:
        assert parsed.limit == int(q["limit"])
