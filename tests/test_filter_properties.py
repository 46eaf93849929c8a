"""Properties of the filter language (hypothesis; pure, deterministic, no servers).

Trees are drawn, printed as filters with random spacing, quoting and keyword spellings, and
parsed back; any text at all may fail only with InvalidArgument at a position inside it; the
SQL never holds a value, only fixed fragments and numbered placeholders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from shared import filters
from shared.errors import InvalidArgument

# --- A model of the tree, without positions ---------------------------------------------------

Tree = tuple[object, ...]  # ("cmp", field, op, value, quoted) | ("not", t) | ("and"|"or", ts)

TEXT_FIELDS = ("file_id", "name", "file_name", "content_type")
ORDERED_FIELDS = ("size_bytes", "created_at", "expires_at", "public_url_expires_at")
KEYWORDS = {"AND", "OR", "NOT"}


def project(node: filters.Node) -> Tree:
    """The parser's tree with positions dropped: what a filter means."""
    if isinstance(node, filters.Comparison):
        return ("cmp", node.field, node.op, node.value.text, node.value.quoted)
    if isinstance(node, filters.Not):
        return ("not", project(node.operand))
    kind = "and" if isinstance(node, filters.And) else "or"
    return (kind, tuple(project(n) for n in node.operands))


def parse(text: str) -> Tree:
    return project(filters._Parser(text).parse())


bare_values = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:/+-]{0,11}", fullmatch=True).filter(
    lambda v: v not in KEYWORDS
)
quoted_values = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@st.composite
def comparisons(draw: st.DrawFn) -> Tree:
    field = draw(st.sampled_from(TEXT_FIELDS + ORDERED_FIELDS))
    ops = ("=", "!=", ":") if field in TEXT_FIELDS else ("=", "!=", "<", "<=", ">", ">=")
    quoted = draw(st.booleans())
    value = draw(quoted_values if quoted else bare_values)
    return ("cmp", field, draw(st.sampled_from(ops)), value, quoted)


def _node(kind: str, children: st.SearchStrategy[Tree]) -> st.SearchStrategy[Tree]:
    # Canonical: an AND holds no AND directly (the parser makes chains n-ary), and so on.
    same = (lambda t: t[0] != kind) if kind in ("and", "or") else (lambda t: True)
    if kind == "not":
        return children.map(lambda t: ("not", t))
    return st.lists(children.filter(same), min_size=2, max_size=4).map(lambda ts: (kind, tuple(ts)))


trees = st.recursive(
    comparisons(),
    lambda children: st.one_of(
        _node("and", children), _node("or", children), _node("not", children)
    ),
    max_leaves=8,
)


@dataclass(frozen=True)
class Style:
    """How one filter is spelled: spaces, the AND joiner, NOT or '-'."""

    space: str
    juxtapose: bool
    dash: bool


styles = st.builds(Style, st.sampled_from([" ", "  ", "\t", " \n "]), st.booleans(), st.booleans())


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(tree: Tree, style: Style) -> str:
    """The filter text for a tree, with parentheses only where precedence needs them."""
    kind = tree[0]
    sp = style.space
    if kind == "cmp":
        _, field, op, value, quoted = tree
        return f"{field}{sp}{op}{sp}{quote(str(value)) if quoted else value}"
    if kind == "not":
        inner = tree[1]
        text = render(inner, style)
        if inner[0] in ("and", "or"):
            text = f"({text})"
        return f"-{text}" if style.dash else f"NOT{sp}{text}"
    parts = []
    for child in tree[1]:
        text = render(child, style)
        # OR binds tighter than AND (AIP-160): only an AND inside an OR needs parentheses.
        parts.append(f"({text})" if kind == "or" and child[0] == "and" else text)
    joiner = sp if kind == "and" and style.juxtapose else f"{sp}{kind.upper()}{sp}"
    return joiner.join(parts)


# --- Properties ---------------------------------------------------------------------------------


@settings(max_examples=200)
@given(trees, styles)
def test_a_printed_filter_parses_back_to_its_tree(tree: Tree, style: Style) -> None:
    assert parse(render(tree, style)) == tree


@settings(max_examples=150)
@given(comparisons(), comparisons(), comparisons(), styles)
def test_or_binds_tighter_than_and(a: Tree, b: Tree, c: Tree, style: Style) -> None:
    ra, rb, rc = (render(t, style) for t in (a, b, c))
    assert parse(f"{ra} AND {rb} OR {rc}") == ("and", (a, ("or", (b, c))))
    assert parse(f"{ra} OR {rb} AND {rc}") == ("and", (("or", (a, b)), c))
    assert parse(f"{ra} {rb} OR {rc}") == ("and", (a, ("or", (b, c))))
    assert parse(f"NOT {ra} OR {rb}") == ("or", (("not", a), b))


@settings(max_examples=100)
@given(trees, styles)
def test_dash_is_not(tree: Tree, style: Style) -> None:
    text = f"({render(tree, style)})"
    assert parse("-" + text) == parse("NOT " + text) == ("not", tree)


PIECES = [
    "name", "size_bytes", "created_at", "public_url", "upload_status", "user_defined_id",
    "colour", "AND", "OR", "NOT", "and", "-", "(", ")", "=", "!=", "<", ">=", ":", "==", '"',
    "'", "\\", '"a\\"b"', "null", "12", "-3", "2026-03-15T00:00:00Z", '"2026-13-45"',
    "9" * 25, " ", "\x00", "\ud800",
]  # fmt: skip
# Any text; mostly the language's own pieces, so that the parser gets deep before it fails.
any_text = st.one_of(
    st.text(max_size=60), st.lists(st.sampled_from(PIECES), max_size=20).map("".join)
)


@settings(max_examples=400)
@given(any_text)
def test_any_text_compiles_or_fails_with_invalid_argument_at_a_position(text: str) -> None:
    try:
        filters.compile_filter(text, first_param=3)
    except InvalidArgument as exc:
        m = re.fullmatch(r"invalid filter at position (\d+): .+", exc.message, re.S)
        assert m, exc.message
        assert 1 <= int(m[1]) <= len(text) + 1


# Every piece of SQL the compiler may emit; anything else would be a value in the text.
_SQL_TOKEN = re.compile(
    r"\s+|[()]|\$\d+::(?:text|bigint|timestamptz)|AND|OR|NOT|IS|NULL|TRUE|FALSE|COALESCE|,"
    r"|strpos|lower|f\.(?:id|filename|bytes|content_type|created_at|expires_at)"
    r"|u\.(?:token|expires_at)|<>|<=|>=|[=<>]|0"
)


@st.composite
def valid_comparisons(draw: st.DrawFn) -> str:
    """Comparisons that compile: each field with values of its type."""
    field = draw(st.sampled_from(sorted(filters._FIELDS)))
    kind = filters._FIELDS[field].kind
    op = draw(st.sampled_from(filters._FIELDS[field].operators))
    if draw(st.integers(0, 9)) == 0 and op in ("=", "!="):
        return f"{field} {op} null"
    if kind == "integer":
        value = str(draw(st.integers(-(2**63), 2**63 - 1)))
    elif kind == "timestamp":
        value = quote(draw(st.datetimes(timezones=st.just(__import__("datetime").UTC))).isoformat())
    else:
        value = quote(draw(quoted_values))
    return f"{field} {op} {value}"


@settings(max_examples=200)
@given(
    st.lists(valid_comparisons(), min_size=1, max_size=6),
    st.lists(st.sampled_from([" AND ", " OR ", " "]), min_size=5, max_size=5),
    st.integers(1, 50),
)
def test_the_sql_holds_no_value_only_numbered_placeholders(
    parts: list[str], joiners: list[str], first: int
) -> None:
    text = parts[0] + "".join(j + p for j, p in zip(joiners, parts[1:], strict=False))
    sql, params = filters.compile_filter(text, first_param=first)
    leftover = _SQL_TOKEN.sub("", sql)
    assert leftover == "", (sql, leftover)
    numbers = [int(n) for n in re.findall(r"\$(\d+)", sql)]
    assert numbers == list(range(first, first + len(params)))
