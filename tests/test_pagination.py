"""List queries and their cursors, without servers: page sizes, signed cursors bound to
their query, and every way a forged or foreign cursor is refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from shared import pagination
from shared.errors import InvalidArgument
from shared.pagination import DEFAULT_PAGE_SIZE, Cursor, ListQuery

SECRET = b"s" * 32
FILE = "file_00000000-0000-4000-8000-000000000001"


def test_the_default_page_is_the_contracts_100() -> None:
    assert DEFAULT_PAGE_SIZE == 100
    assert ListQuery().limit == 100
    assert pagination.page_size(ListQuery(), 100) == 100


def test_a_page_size_is_clamped_to_the_maximum() -> None:
    assert pagination.page_size(ListQuery(limit=1), 100) == 1
    assert pagination.page_size(ListQuery(limit=1000), 100) == 100
    assert pagination.page_size(ListQuery(limit=1000), 20) == 20


@pytest.mark.parametrize("limit", [0, -1])
def test_a_page_needs_at_least_one_row(limit: int) -> None:
    with pytest.raises(InvalidArgument, match="at least 1"):
        pagination.page_size(ListQuery(limit=limit), 100)


def test_an_unchecked_order_or_sort_key_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="order must be asc or desc"):
        pagination.page_size(ListQuery(order="up"), 100)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="sort_by must be one of"):
        pagination.page_size(ListQuery(sort_by="owner"), 100)  # type: ignore[arg-type]


def test_transports_check_order_and_sort_keys_with_the_same_vocabulary() -> None:
    assert [v for v in ("asc", "desc", "ASC", "") if pagination.is_order(v)] == ["asc", "desc"]
    keys = ("created_at", "filename", "size", "bytes")
    assert [v for v in keys if pagination.is_sort_by(v)] == ["created_at", "filename", "size"]


@pytest.mark.parametrize(
    "value", [datetime(2026, 3, 15, 12, 0, 0, 123456, tzinfo=UTC), "report.pdf", 49_000_000, 0]
)
def test_a_cursor_round_trips_its_sort_value_with_its_type(value: datetime | str | int) -> None:
    digest = ListQuery().digest()
    token = pagination.encode(SECRET, digest, Cursor(value, FILE))
    back = pagination.decode(SECRET, digest, token)
    assert back == Cursor(value, FILE)
    assert type(back.sort_value) is type(value)


def test_a_cursor_is_opaque_url_safe_text() -> None:
    token = pagination.encode(SECRET, "d", Cursor("a/b+c=d", FILE))
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_the_digest_binds_sort_order_filter_and_purpose_but_not_size_or_position() -> None:
    base = ListQuery()
    same = ListQuery(limit=5, pagination_token="x", after=FILE)
    assert base.digest() == same.digest()
    others = [
        ListQuery(order="asc"),
        ListQuery(sort_by="size"),
        ListQuery(filter="name:a"),
        ListQuery(purpose="assistants"),
    ]
    assert len({base.digest(), *(q.digest() for q in others)}) == 5


def test_empty_and_missing_filters_are_the_same_query() -> None:
    assert ListQuery(filter="").digest() == ListQuery(filter=None).digest()


def test_parts_of_the_digest_cannot_run_into_each_other() -> None:
    assert pagination.query_digest("ab", "c") != pagination.query_digest("a", "bc")


def test_a_cursor_from_another_query_is_refused_with_the_reason() -> None:
    token = pagination.encode(SECRET, ListQuery().digest(), Cursor(1, FILE))
    with pytest.raises(InvalidArgument, match="belongs to a different query"):
        pagination.decode(SECRET, ListQuery(order="asc").digest(), token)


def test_a_cursor_signed_with_another_secret_is_refused() -> None:
    token = pagination.encode(b"other", "d", Cursor(1, FILE))
    with pytest.raises(InvalidArgument, match="not a token this server issued"):
        pagination.decode(SECRET, "d", token)


def test_a_cursor_with_an_edited_position_is_refused() -> None:
    token = pagination.encode(SECRET, "d", Cursor(1, FILE))
    body, _, sig = token.partition(".")
    edited = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    edited[2] = 2
    forged = base64.urlsafe_b64encode(json.dumps(edited).encode()).decode().rstrip("=")
    with pytest.raises(InvalidArgument, match="not a token this server issued"):
        pagination.decode(SECRET, "d", f"{forged}.{sig}")


@pytest.mark.parametrize("garbage", ["", ".", "abc", "abc.def", "a.b.c", "é.é", "%%%.%%%"])
def test_garbage_is_a_clear_invalid_argument_not_a_crash(garbage: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid pagination_token"):
        pagination.decode(SECRET, "d", garbage)
