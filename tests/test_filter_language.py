"""The list filter language (AIP-160): what each filter means, and what each mistake says.

Pure logic, no servers: `test_filters_on_postgresql.py` runs the compiled SQL on a real
PostgreSQL, to show the fragments are valid and select the right rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.errors import InvalidArgument
from shared.filters import MAX_COMPARISONS, compile_filter

NAME_EQ = "COALESCE(f.filename = $1::text, FALSE)"


def sql(text: str, first_param: int = 1) -> str:
    return compile_filter(text, first_param=first_param)[0]


def params(text: str) -> list[object]:
    return compile_filter(text, first_param=1)[1]


def error(text: str) -> str:
    with pytest.raises(InvalidArgument) as info:
        compile_filter(text, first_param=1)
    return info.value.message


# --- The documented examples ---------------------------------------------------------------


def test_public_url_not_null_finds_files_with_a_live_url() -> None:
    assert compile_filter("public_url != null", first_param=1) == ("(u.token IS NOT NULL)", [])


def test_public_url_null_finds_files_without_a_url() -> None:
    assert compile_filter("public_url = null", first_param=1) == ("(u.token IS NULL)", [])


def test_size_bytes_greater_than_compares_as_bigint() -> None:
    assert compile_filter("size_bytes > 1048576", first_param=1) == (
        "COALESCE(f.bytes > $1::bigint, FALSE)",
        [1048576],
    )


def test_content_type_and_created_at_example() -> None:
    text = 'content_type = "image/png" AND created_at > "2026-03-15T00:00:00Z"'
    assert compile_filter(text, first_param=4) == (
        "(COALESCE(f.content_type = $4::text, FALSE)"
        " AND COALESCE(f.created_at > $5::timestamptz, FALSE))",
        ["image/png", datetime(2026, 3, 15, tzinfo=UTC)],
    )


def test_name_has_is_a_case_insensitive_contains() -> None:
    assert compile_filter('name:"report"', first_param=1) == (
        "COALESCE(strpos(lower(f.filename), lower($1::text)) > 0, FALSE)",
        ["report"],
    )


def test_file_id_is_an_exact_match() -> None:
    assert compile_filter('file_id = "file_abc123"', first_param=1) == (
        "COALESCE(f.id = $1::text, FALSE)",
        ["file_abc123"],
    )


def test_other_documented_examples_compile() -> None:
    assert params('content_type = "application/pdf"') == ["application/pdf"]
    assert params('name = "report.pdf"') == ["report.pdf"]
    assert params('size_bytes > 1000000 AND created_at > "2024-01-01T00:00:00Z"') == [
        1000000,
        datetime(2024, 1, 1, tzinfo=UTC),
    ]
    assert params('name:"quarterly report"') == ["quarterly report"]


# --- Empty input and placeholders ----------------------------------------------------------


def test_empty_filter_matches_everything() -> None:
    assert compile_filter("", first_param=3) == ("TRUE", [])


def test_whitespace_only_filter_matches_everything() -> None:
    assert compile_filter("  \t\n ", first_param=3) == ("TRUE", [])


def test_placeholders_start_at_first_param_and_count_up() -> None:
    text, values = compile_filter('name = "a" OR name = "b" OR size_bytes < 3', first_param=7)
    assert "$7::text" in text and "$8::text" in text and "$9::bigint" in text
    assert "$6" not in text and "$10" not in text
    assert values == ["a", "b", 3]


# --- Precedence, juxtaposition, negation, parentheses --------------------------------------


def test_or_binds_tighter_than_and() -> None:
    assert sql('name = "a" AND name = "b" OR name = "c"') == (
        "(COALESCE(f.filename = $1::text, FALSE) AND (COALESCE(f.filename = $2::text, FALSE)"
        " OR COALESCE(f.filename = $3::text, FALSE)))"
    )


def test_or_binds_tighter_than_and_on_the_left_too() -> None:
    assert sql('name = "a" OR name = "b" AND name = "c"') == (
        "((COALESCE(f.filename = $1::text, FALSE) OR COALESCE(f.filename = $2::text, FALSE))"
        " AND COALESCE(f.filename = $3::text, FALSE))"
    )


def test_juxtaposition_means_and() -> None:
    assert sql('name = "a" size_bytes > 5') == sql('name = "a" AND size_bytes > 5')


def test_juxtaposition_is_looser_than_or() -> None:
    assert sql('name = "a" name = "b" OR name = "c"') == (
        "(COALESCE(f.filename = $1::text, FALSE) AND (COALESCE(f.filename = $2::text, FALSE)"
        " OR COALESCE(f.filename = $3::text, FALSE)))"
    )


def test_chained_and_stays_flat() -> None:
    text = " AND ".join(f"size_bytes > {i}" for i in range(3))
    assert sql(text) == (
        "(COALESCE(f.bytes > $1::bigint, FALSE) AND COALESCE(f.bytes > $2::bigint, FALSE)"
        " AND COALESCE(f.bytes > $3::bigint, FALSE))"
    )


def test_long_flat_chain_compiles() -> None:
    # Up to the comparison cap: the tree is n-ary, so no recursion limit is hit.
    text = " OR ".join("size_bytes>1" for _ in range(MAX_COMPARISONS))
    assert len(params(text)) == MAX_COMPARISONS


def test_more_comparisons_than_the_cap_is_refused_naming_where() -> None:
    # ~370 ORs fit the length limit, and each is a predicate on every row of the team.
    text = " OR ".join("size_bytes>1" for _ in range(MAX_COMPARISONS + 1))
    position = len(" OR ".join("size_bytes>1" for _ in range(MAX_COMPARISONS))) + len(" OR ")
    assert error(text) == (
        f"invalid filter at position {position + 1}: more than {MAX_COMPARISONS} comparisons;"
        " split the query or narrow it"
    )


def test_not_negates_a_comparison() -> None:
    assert sql('NOT name = "a"') == f"(NOT {NAME_EQ})"


def test_minus_is_not_shorthand() -> None:
    assert sql('-name:"x"') == sql('NOT name:"x"')


def test_minus_negates_a_group() -> None:
    assert sql('-(name = "a" OR name = "b")') == sql('NOT (name = "a" OR name = "b")')


def test_not_binds_to_the_next_term_only() -> None:
    assert sql('NOT name = "a" AND size_bytes > 1') == (
        f"((NOT {NAME_EQ}) AND COALESCE(f.bytes > $2::bigint, FALSE))"
    )


def test_not_directly_before_a_parenthesis() -> None:
    assert sql('NOT(name = "a")') == f"(NOT {NAME_EQ})"


def test_double_negation_is_allowed() -> None:
    assert sql('NOT NOT name = "a"') == f"(NOT (NOT {NAME_EQ}))"


def test_minus_must_touch_its_term() -> None:
    assert error('- name = "a"') == (
        'invalid filter at position 2: expected a field or "(" right after "-"'
    )


def test_parentheses_override_precedence() -> None:
    assert sql('(name = "a" AND name = "b") OR name = "c"') == (
        "((COALESCE(f.filename = $1::text, FALSE) AND COALESCE(f.filename = $2::text, FALSE))"
        " OR COALESCE(f.filename = $3::text, FALSE))"
    )


def test_redundant_parentheses_add_nothing() -> None:
    assert sql('((name = "a"))') == NAME_EQ


def test_comparisons_are_coalesced_so_not_is_a_true_negation() -> None:
    # expires_at is nullable: without COALESCE, NOT (NULL > x) would drop never-expiring files.
    assert sql('NOT expires_at > "2026-01-01T00:00:00Z"') == (
        "(NOT COALESCE(f.expires_at > $1::timestamptz, FALSE))"
    )


def test_lower_case_keywords_are_not_keywords() -> None:
    message = error('name = "a" and size_bytes > 1')
    assert message.startswith('invalid filter at position 12: unknown field "and"')
    assert 'keywords are upper-case: "AND"' in message


def test_keywords_in_value_position_must_be_quoted() -> None:
    assert error("name = AND") == (
        'invalid filter at position 8: expected a value, found the keyword "AND"'
        " (quote it to match the word)"
    )
    assert params('name = "AND"') == ["AND"]


def test_keyword_prefix_is_part_of_a_field_name() -> None:
    assert error('ANDname = "a"').startswith(
        'invalid filter at position 1: unknown field "ANDname"'
    )


# --- Spacing, quoting, literals ------------------------------------------------------------


def test_spaces_around_operators_are_optional() -> None:
    assert sql("size_bytes>5") == sql("size_bytes > 5")
    assert sql('name:"x"') == sql('name : "x"')
    assert sql("size_bytes>=5") == "COALESCE(f.bytes >= $1::bigint, FALSE)"


def test_tabs_and_newlines_are_whitespace() -> None:
    assert sql('name = "a"\n\tAND\tsize_bytes > 1') == sql('name = "a" AND size_bytes > 1')


def test_single_and_double_quotes_are_equivalent() -> None:
    assert params("name = 'a b'") == params('name = "a b"') == ["a b"]


def test_backslash_escapes_in_strings() -> None:
    assert params(r'name = "say \"hi\""') == ['say "hi"']
    assert params(r"name = 'it\'s'") == ["it's"]
    assert params(r'name = "C:\\temp"') == ["C:\\temp"]
    assert params(r'name = "mixed \' quote"') == ["mixed ' quote"]


def test_other_quote_kind_needs_no_escape() -> None:
    assert params('name = "it\'s"') == ["it's"]


def test_unknown_escape_is_an_error() -> None:
    assert error(r'name = "a\n"') == (
        'invalid filter at position 10: unknown escape "\\n" (only \\" \\\' and \\\\ are allowed)'
    )


def test_unterminated_string_names_where_it_starts() -> None:
    assert error('name = "abc') == (
        'invalid filter at position 8: string is never closed (expected a closing ")'
    )


def test_backslash_at_end_of_input() -> None:
    assert error('name = "abc\\') == (
        "invalid filter at position 13: unexpected end of input, "
        "expected a character after the backslash"
    )


def test_bare_values_are_strings() -> None:
    assert params("content_type = image/png") == ["image/png"]
    assert params("file_id=file_abc123") == ["file_abc123"]


def test_bare_value_ends_at_a_parenthesis() -> None:
    assert params("(content_type=image/png)") == ["image/png"]


def test_quotes_make_wildcards_literal() -> None:
    assert params('name = "E*"') == ["E*"]


def test_empty_string_is_a_value() -> None:
    assert params('name = ""') == [""]


def test_unicode_values_pass_through() -> None:
    assert params('name:"Übersicht 報告"') == ["Übersicht 報告"]


def test_negative_integer_value() -> None:
    assert params("size_bytes > -1") == [-1]


def test_quoted_integer_is_accepted_for_integer_fields() -> None:
    assert params('size_bytes > "1048576"') == [1048576]


def test_bare_number_is_a_string_for_text_fields() -> None:
    assert params("name = 2024") == ["2024"]


def test_value_must_be_followed_by_a_separator() -> None:
    assert error('name = "a"b') == (
        'invalid filter at position 11: expected a space, "AND", "OR" or ")" after the value,'
        ' found "b"'
    )


def test_double_equals_is_not_an_operator() -> None:
    assert error('name == "x"') == (
        'invalid filter at position 7: expected a value after "=", found "="'
    )


# --- Timestamps ----------------------------------------------------------------------------


def test_timestamp_with_utc_designator() -> None:
    assert params('created_at > "2026-03-15T00:00:00Z"') == [datetime(2026, 3, 15, tzinfo=UTC)]


def test_timestamp_with_offset_is_normalised_to_utc() -> None:
    [when] = params('created_at > "2026-03-15T05:30:00+05:30"')
    assert when == datetime(2026, 3, 15, tzinfo=UTC)
    assert isinstance(when, datetime) and when.tzinfo == UTC


def test_timestamp_with_negative_offset() -> None:
    [when] = params('created_at > "2026-03-14T19:00:00-05:00"')
    assert when == datetime(2026, 3, 15, tzinfo=timezone(timedelta(0)))


def test_timestamp_fractional_seconds_keep_microseconds() -> None:
    assert params('created_at < "2026-03-15T00:00:00.123456789Z"') == [
        datetime(2026, 3, 15, 0, 0, 0, 123456, tzinfo=UTC)
    ]
    assert params('created_at < "2026-03-15T00:00:00.5Z"') == [
        datetime(2026, 3, 15, 0, 0, 0, 500000, tzinfo=UTC)
    ]


def test_timestamp_without_offset_is_utc() -> None:
    assert params('created_at > "2026-03-15T00:00:00"') == [datetime(2026, 3, 15, tzinfo=UTC)]


def test_date_only_is_midnight_utc() -> None:
    assert params('expires_at < "2026-03-15"') == [datetime(2026, 3, 15, tzinfo=UTC)]


def test_integer_timestamp_is_unix_seconds() -> None:
    assert params("created_at >= 1773532800") == [datetime(2026, 3, 15, tzinfo=UTC)]


def test_bare_rfc3339_timestamp_is_accepted() -> None:
    assert params("created_at>2026-03-15T00:00:00Z") == [datetime(2026, 3, 15, tzinfo=UTC)]


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-02-30",
        "2026-03-15T24:00:00Z",
        "2026-03-15T00:00:00+24:00",
        "2026-3-5",
        "99999999999999999999",
        "",
    ],
)
def test_bad_timestamps_are_rejected(value: str) -> None:
    assert error(f'created_at > "{value}"') == (
        "invalid filter at position 14: created_at needs an RFC 3339 timestamp such as"
        f' "2026-03-15T00:00:00Z" or Unix seconds, found "{value}"'
    )


# --- Null ----------------------------------------------------------------------------------


def test_null_on_nullable_timestamps() -> None:
    assert sql("expires_at = null") == "(f.expires_at IS NULL)"
    assert sql("expires_at != null") == "(f.expires_at IS NOT NULL)"
    assert sql("public_url_expires_at = null") == "(u.expires_at IS NULL)"
    assert sql("public_url_expires_at != null") == "(u.expires_at IS NOT NULL)"


def test_null_on_a_non_nullable_column_is_allowed() -> None:
    assert compile_filter("created_at = null", first_param=1) == ("(f.created_at IS NULL)", [])
    assert sql("name != null") == "(f.filename IS NOT NULL)"
    assert sql("size_bytes = null") == "(f.bytes IS NULL)"


def test_null_with_an_ordering_operator_is_an_error() -> None:
    assert error("expires_at > null") == (
        'invalid filter at position 14: null can only be compared with = or !=, not ">"'
    )
    assert error("name : null") == (
        'invalid filter at position 8: null can only be compared with = or !=, not ":"'
    )


def test_quoted_null_is_a_string() -> None:
    assert compile_filter('name = "null"', first_param=1) == (NAME_EQ, ["null"])


def test_upper_case_null_is_not_null() -> None:
    assert params("name = NULL") == ["NULL"]


# --- Fields and their operators ------------------------------------------------------------


def test_file_name_is_an_alias_of_name() -> None:
    assert compile_filter('file_name:"x"', first_param=1) == compile_filter(
        'name:"x"', first_param=1
    )


def test_name_not_equal_is_exact() -> None:
    assert sql('name != "a"') == "COALESCE(f.filename <> $1::text, FALSE)"


def test_content_type_has_is_a_case_insensitive_contains() -> None:
    assert compile_filter('content_type:"pdf"', first_param=1) == (
        "COALESCE(strpos(lower(f.content_type), lower($1::text)) > 0, FALSE)",
        ["pdf"],
    )


@pytest.mark.parametrize(
    ("op", "sql_op"), [("=", "="), ("!=", "<>"), ("<", "<"), ("<=", "<="), (">", ">"), (">=", ">=")]
)
def test_size_bytes_supports_every_comparison(op: str, sql_op: str) -> None:
    assert sql(f"size_bytes {op} 10") == f"COALESCE(f.bytes {sql_op} $1::bigint, FALSE)"


@pytest.mark.parametrize(
    ("field", "column"),
    [
        ("created_at", "f.created_at"),
        ("expires_at", "f.expires_at"),
        ("public_url_expires_at", "u.expires_at"),
    ],
)
@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_timestamp_fields_support_every_comparison(field: str, column: str, op: str) -> None:
    sql_op = "<>" if op == "!=" else op
    assert sql(f'{field} {op} "2026-03-15T00:00:00Z"') == (
        f"COALESCE({column} {sql_op} $1::timestamptz, FALSE)"
    )


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ('file_id > "a"', "= !="),
        ('file_id : "a"', "= !="),
        ('name > "a"', "= != :"),
        ('content_type <= "a"', "= != :"),
        ("size_bytes : 5", "= != < <= > >="),
        ('created_at : "2026-03-15"', "= != < <= > >="),
        ('public_url : "x"', "= !="),
        ('public_url > "x"', "= !="),
        ('upload_status : "complete"', "= !="),
        ('user_defined_id < "x"', "= !="),
    ],
)
def test_forbidden_operator_names_the_field_and_the_allowed_ones(text: str, allowed: str) -> None:
    field, op = text.split(" ")[:2]
    assert error(text) == (
        f'invalid filter at position {len(field) + 2}: field "{field}" does not support "{op}";'
        f" use one of: {allowed}"
    )


def test_public_url_compares_the_token_from_the_url() -> None:
    assert compile_filter(
        'public_url = "https://cdn.example.com/AbCd_-12/file_1.png"', first_param=1
    ) == ("COALESCE(u.token = $1::text, FALSE)", ["AbCd_-12"])
    assert compile_filter('public_url != "https://cdn/tok/f.pdf"', first_param=1) == (
        "COALESCE(u.token <> $1::text, FALSE)",
        ["tok"],
    )


@pytest.mark.parametrize("value", ["not a url", "tok/", "/name.png", "https://cdn//x.png"])
def test_public_url_of_the_wrong_shape_matches_nothing(value: str) -> None:
    assert compile_filter(f'public_url = "{value}"', first_param=1) == ("FALSE", [])
    # ...and so differs from every live URL (files without one are never "different").
    assert compile_filter(f'public_url != "{value}"', first_param=1) == (
        "(u.token IS NOT NULL)",
        [],
    )


def test_upload_status_is_always_complete() -> None:
    assert compile_filter('upload_status = "complete"', first_param=1) == ("TRUE", [])
    assert sql('upload_status = "Complete"') == "TRUE"
    assert sql("upload_status = COMPLETE") == "TRUE"
    assert sql('upload_status != "complete"') == "FALSE"
    assert sql('upload_status = "pending"') == "FALSE"
    assert sql('upload_status != "pending"') == "TRUE"
    assert sql("upload_status = null") == "FALSE"
    assert sql("upload_status != null") == "TRUE"


def test_user_defined_id_is_always_null() -> None:
    assert compile_filter("user_defined_id = null", first_param=1) == ("TRUE", [])
    assert sql("user_defined_id != null") == "FALSE"
    assert sql('user_defined_id = "abc"') == "FALSE"
    assert sql('user_defined_id != "abc"') == "FALSE"


def test_constants_combine_with_other_terms() -> None:
    assert sql('upload_status = "complete" AND NOT user_defined_id != null') == (
        "(TRUE AND (NOT FALSE))"
    )


# --- Value type errors ---------------------------------------------------------------------


def test_size_bytes_needs_an_integer() -> None:
    assert error('size_bytes > "big"') == (
        'invalid filter at position 14: size_bytes needs an integer, found "big"'
    )


@pytest.mark.parametrize("value", ["1.5", "1e6", "1_000", "\uff10", "9223372036854775808", "+5"])
def test_size_bytes_rejects_non_integers_and_out_of_range(value: str) -> None:
    assert error(f"size_bytes = {value}") == (
        f'invalid filter at position 14: size_bytes needs an integer, found "{value}"'
    )


def test_size_bytes_accepts_the_bigint_range() -> None:
    assert params("size_bytes <= 9223372036854775807") == [2**63 - 1]


def test_created_at_needs_a_timestamp() -> None:
    assert error('size_bytes > 1 AND created_at > "yesterday"') == (
        "invalid filter at position 33: created_at needs an RFC 3339 timestamp such as"
        ' "2026-03-15T00:00:00Z" or Unix seconds, found "yesterday"'
    )


def test_long_bad_values_are_shortened_in_messages() -> None:
    message = error(f'size_bytes = "{"x" * 100}"')
    assert message.endswith('found "' + "x" * 30 + '..."')


# --- Syntax errors -------------------------------------------------------------------------


def test_unknown_field_lists_the_known_ones() -> None:
    assert error('colour = "red"') == (
        'invalid filter at position 1: unknown field "colour"; known fields: file_id, name,'
        " file_name, size_bytes, content_type, created_at, expires_at, public_url,"
        " public_url_expires_at, upload_status, user_defined_id"
    )


def test_unknown_field_position_is_where_it_starts() -> None:
    assert error('name = "a" AND colour = "red"').startswith(
        'invalid filter at position 16: unknown field "colour"'
    )


def test_missing_operator() -> None:
    assert error("size_bytes big") == (
        "invalid filter at position 12: expected an operator (= != < <= > >= :)"
        ' after "size_bytes", found "big"'
    )


def test_missing_operator_at_end() -> None:
    assert error("size_bytes") == (
        "invalid filter at position 11: unexpected end of input, "
        'expected an operator (= != < <= > >= :) after "size_bytes"'
    )


def test_missing_value_at_end() -> None:
    assert error("name =") == (
        "invalid filter at position 7: unexpected end of input, expected a value"
    )


def test_missing_value_before_parenthesis() -> None:
    assert error("(name = )") == (
        'invalid filter at position 9: expected a value after "=", found ")"'
    )


def test_dangling_and() -> None:
    assert error('name = "a" AND') == (
        'invalid filter at position 15: unexpected end of input, expected a field or "("'
    )


def test_dangling_not() -> None:
    assert error("NOT") == (
        'invalid filter at position 4: unexpected end of input, expected a field or "("'
    )


def test_leading_or() -> None:
    assert error('OR name = "a"') == (
        'invalid filter at position 1: expected a field or "(", found "OR"'
    )


def test_double_operator_keywords() -> None:
    assert error('name = "a" AND OR name = "b"') == (
        'invalid filter at position 16: expected a field or "(", found "OR"'
    )


def test_unclosed_parenthesis_points_at_the_opening_one() -> None:
    assert error('name = "a" AND (size_bytes > 1') == (
        "invalid filter at position 16: unbalanced parenthesis"
    )


def test_extra_closing_parenthesis_points_at_itself() -> None:
    assert error('(name = "a") AND size_bytes > 1)') == (
        "invalid filter at position 32: unbalanced parenthesis"
    )


def test_empty_parentheses() -> None:
    assert error("()") == 'invalid filter at position 2: expected a field or "(", found ")"'


def test_trailing_garbage_after_a_comparison() -> None:
    assert error('name = "a" "b"') == (
        'invalid filter at position 12: expected a field or "(", found the string "b"'
    )
    assert error('name = "a" ===') == (
        'invalid filter at position 12: expected a field or "(", found "==="'
    )


def test_global_restriction_without_a_field_is_not_supported() -> None:
    assert error("report").startswith('invalid filter at position 1: unknown field "report"')


def test_nul_characters_are_rejected() -> None:
    assert error('name = "a\x00"') == (
        "invalid filter at position 10: NUL characters are not allowed"
    )


def test_lone_surrogates_are_rejected() -> None:
    assert error('name = "\udcff"') == (
        "invalid filter at position 9: invalid character (not valid Unicode)"
    )


# --- Limits --------------------------------------------------------------------------------


def test_filter_of_4096_characters_is_accepted() -> None:
    text = 'name = "' + "x" * (4096 - len('name = ""')) + '"'
    assert len(text) == 4096
    assert len(params(text)) == 1


def test_filter_over_4096_characters_is_rejected() -> None:
    text = 'name = "' + "x" * (4097 - len('name = ""')) + '"'
    assert error(text) == "invalid filter: longer than 4096 characters (4097 given)"


def test_nesting_of_32_parentheses_is_accepted() -> None:
    assert sql("(" * 32 + 'name = "a"' + ")" * 32) == NAME_EQ


def test_nesting_deeper_than_32_parentheses_is_rejected() -> None:
    assert error("(" * 33 + 'name = "a"' + ")" * 33) == (
        "invalid filter at position 33: nested deeper than 32 levels"
    )


def test_nesting_deeper_than_32_negations_is_rejected() -> None:
    assert sql("NOT " * 32 + 'name = "a"').count("NOT") == 32
    assert error("-" * 33 + 'name = "a"') == (
        "invalid filter at position 33: nested deeper than 32 levels"
    )


# --- User input never reaches the SQL text -------------------------------------------------

HOSTILE = [
    "x'; DROP TABLE files; --",
    'a" OR TRUE --',
    ") OR (TRUE",
    "$1",
    "f.id",
    "\\'",
    "lower(f.filename)",
    "日本語 🙂",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("template", ["name = {}", "name:{}", "content_type != {}", "file_id = {}"])
def test_string_values_only_travel_as_parameters(template: str, value: str) -> None:
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    text, values = compile_filter(template.format(quoted), first_param=1)
    # The SQL is the same whatever the value: the value is only ever a parameter.
    assert text == compile_filter(template.format('"plain"'), first_param=1)[0]
    assert values == [value]


def test_public_url_token_only_travels_as_a_parameter() -> None:
    text, values = compile_filter('public_url = "https://x/a\'b--/f.png"', first_param=1)
    assert text == "COALESCE(u.token = $1::text, FALSE)"
    assert values == ["a'b--"]


def test_sql_text_never_contains_quotes() -> None:
    for text in [
        'name = "it\'s" OR content_type:"x\\"y" AND NOT file_id = \'z\'',
        "public_url = \"https://x/t'/n\" created_at > '2026-03-15T00:00:00Z'",
    ]:
        compiled = sql(text)
        assert "'" not in compiled and '"' not in compiled and "--" not in compiled
