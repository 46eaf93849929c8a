"""The list `filter` language (AIP-160), compiled to a parameterised SQL WHERE fragment.

Users type these filters, so they must never reach the SQL text: the parser below turns them
into a small tree, and the compiler emits only fixed SQL with `$n` placeholders for every value.
Errors name the 1-based position and what was expected, so a 400 tells the user what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal, NoReturn

from shared.errors import InvalidArgument

__all__ = ["compile_filter"]

MAX_LENGTH = 4096
MAX_DEPTH = 32
# Comparisons in one filter: each is a predicate PostgreSQL evaluates on every candidate row,
# and an OR of hundreds makes one list scan the team's whole table (the length limit alone
# allows ~370). Real filters name a few fields.
MAX_COMPARISONS = 64

_OPERATORS = ("!=", ">=", "<=", "=", ">", "<", ":")  # two-character ones first
_OPERATOR_LIST = "= != < <= > >= :"
_OPERATOR_CHARS = frozenset("=!<>:")
_KEYWORDS = frozenset({"AND", "OR", "NOT"})
_QUOTES = frozenset("\"'")
_ESCAPABLE = frozenset("\"'\\")
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.]*")
_INTEGER = re.compile(r"-?[0-9]+")
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?"
)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SQL_OPERATORS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def compile_filter(text: str, *, first_param: int) -> tuple[str, list[object]]:
    """Compile `text` into (sql, params); placeholders start at $first_param.

    The SQL reads the aliases `f` (files) and `u` (the file's live public URL, LEFT JOINed).
    Raises shared.errors.InvalidArgument on any bad filter.
    """
    if first_param < 1:
        raise ValueError("first_param must be at least 1")
    _check_text(text)
    if not text.strip():
        return "TRUE", []
    params = _Params(first_param)
    return _compile(_Parser(text).parse(), params), params.values


def _check_text(text: str) -> None:
    if len(text) > MAX_LENGTH:
        raise InvalidArgument(
            f"invalid filter: longer than {MAX_LENGTH} characters ({len(text)} given)"
        )
    # PostgreSQL text cannot hold NUL, and asyncpg cannot encode lone surrogates: refuse
    # them here as bad input rather than fail later as a server error.
    if "\x00" in text:
        raise _error_at(text.index("\x00"), "NUL characters are not allowed")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _error_at(e.start, "invalid character (not valid Unicode)") from None


def _error_at(position: int, message: str) -> InvalidArgument:
    return InvalidArgument(f"invalid filter at position {position + 1}: {message}")


def _end_of_input(position: int, expected: str) -> InvalidArgument:
    return _error_at(position, f"unexpected end of input, expected {expected}")


# --- The tree ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Value:
    text: str
    quoted: bool
    position: int  # 0-based index into the filter text, as in every node

    @property
    def is_null(self) -> bool:
        # Only the bare word is null: "null" in quotes is a string like any other.
        return not self.quoted and self.text == "null"


@dataclass(frozen=True, slots=True)
class Comparison:
    field: str
    op: str
    op_position: int
    value: Value


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]  # n-ary, so that long chains do not make a deep tree


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]


Node = Comparison | Not | And | Or


# --- Fields --------------------------------------------------------------------------------

_Kind = Literal["text", "integer", "timestamp", "public_url", "upload_status", "always_null"]
_EQUALITY = ("=", "!=")
_ORDERING = ("=", "!=", "<", "<=", ">", ">=")
_TEXT_SEARCH = ("=", "!=", ":")


@dataclass(frozen=True, slots=True)
class _Field:
    column: str
    kind: _Kind
    operators: tuple[str, ...]


_FIELDS: dict[str, _Field] = {
    "file_id": _Field("f.id", "text", _EQUALITY),
    "name": _Field("f.filename", "text", _TEXT_SEARCH),
    "file_name": _Field("f.filename", "text", _TEXT_SEARCH),
    "size_bytes": _Field("f.bytes", "integer", _ORDERING),
    "content_type": _Field("f.content_type", "text", _TEXT_SEARCH),
    "created_at": _Field("f.created_at", "timestamp", _ORDERING),
    "expires_at": _Field("f.expires_at", "timestamp", _ORDERING),
    "public_url": _Field("u.token", "public_url", _EQUALITY),
    "public_url_expires_at": _Field("u.expires_at", "timestamp", _ORDERING),
    "upload_status": _Field("", "upload_status", _EQUALITY),
    "user_defined_id": _Field("", "always_null", _EQUALITY),
}
_KNOWN_FIELDS = ", ".join(_FIELDS)


# --- Parsing -------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over AIP-160, where OR binds tighter than AND:

    expression := sequence { "AND" sequence }
    sequence   := factor { factor }              (juxtaposition means AND)
    factor     := term { "OR" term }
    term       := [ "NOT" | "-" ] simple
    simple     := "(" expression ")" | field operator value
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0
        self.comparisons = 0

    def parse(self) -> Node:
        node = self._expression()
        self._skip_space()
        if not self._at_end():
            # Every loop stops only at the end or at ")", so this is a stray one.
            raise _error_at(self.pos, "unbalanced parenthesis")
        return node

    # Grammar rules.

    def _expression(self) -> Node:
        operands = [self._sequence()]
        while self._skip_space() and self._peek_word() == "AND":
            self.pos += len("AND")
            operands.append(self._sequence())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _sequence(self) -> Node:
        operands = [self._factor()]
        while self._skip_space() and self._peek() != ")" and self._peek_word() != "AND":
            operands.append(self._factor())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _factor(self) -> Node:
        operands = [self._term()]
        while self._skip_space() and self._peek_word() == "OR":
            self.pos += len("OR")
            operands.append(self._term())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def _term(self) -> Node:
        self._skip_space()
        start = self.pos
        if self._peek_word() == "NOT":
            self.pos += len("NOT")
            return Not(self._nested(start, self._term))
        if self._peek() == "-":
            self.pos += 1
            if not self._at_end() and self._peek().isspace():
                raise _error_at(self.pos, 'expected a field or "(" right after "-"')
            return Not(self._nested(start, self._term))
        if self._peek() == "(":
            self.pos += 1
            inner = self._nested(start, self._expression)
            self._close_paren(start)
            return inner
        return self._comparison()

    def _nested(self, start: int, rule: Callable[[], Node]) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _error_at(start, f"nested deeper than {MAX_DEPTH} levels")
        node = rule()
        self.depth -= 1
        return node

    def _close_paren(self, opened_at: int) -> None:
        self._skip_space()
        if self._at_end():
            raise _error_at(opened_at, "unbalanced parenthesis")
        if self._peek() != ")":
            raise _error_at(self.pos, f'expected ")", found {self._describe()}')
        self.pos += 1

    def _comparison(self) -> Comparison:
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise _error_at(
                self.pos,
                f"more than {MAX_COMPARISONS} comparisons; split the query or narrow it",
            )
        field = self._field()
        self._skip_space()
        op_position = self.pos
        op = self._operator(field)
        self._skip_space()
        return Comparison(field, op, op_position, self._value(op))

    def _field(self) -> str:
        if self._at_end():
            raise _end_of_input(len(self.text), 'a field or "("')
        start = self.pos
        word = self._peek_word()
        if not word or word in _KEYWORDS:
            raise _error_at(start, f'expected a field or "(", found {self._describe()}')
        if word not in _FIELDS:
            hint = (
                f' (keywords are upper-case: "{word.upper()}")' if word.upper() in _KEYWORDS else ""
            )
            raise _error_at(start, f'unknown field "{word}"{hint}; known fields: {_KNOWN_FIELDS}')
        self.pos += len(word)
        return word

    def _operator(self, field: str) -> str:
        expected = f'an operator ({_OPERATOR_LIST}) after "{field}"'
        if self._at_end():
            raise _end_of_input(len(self.text), expected)
        for op in _OPERATORS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        raise _error_at(self.pos, f"expected {expected}, found {self._describe()}")

    def _value(self, op: str) -> Value:
        if self._at_end():
            raise _end_of_input(len(self.text), "a value")
        start = self.pos
        if self._peek() in _QUOTES:
            value = Value(self._quoted(), True, start)
        else:
            value = Value(self._bare(op), False, start)
        if not self._at_end() and not self._at_delimiter():
            raise _error_at(
                self.pos,
                f'expected a space, "AND", "OR" or ")" after the value, found {self._describe()}',
            )
        return value

    def _quoted(self) -> str:
        start = self.pos
        quote = self.text[start]
        self.pos += 1
        chars: list[str] = []
        while not self._at_end():
            char = self.text[self.pos]
            if char == quote:
                self.pos += 1
                return "".join(chars)
            if char == "\\":
                chars.append(self._escape())
                continue
            chars.append(char)
            self.pos += 1
        raise _error_at(start, f"string is never closed (expected a closing {quote})")

    def _escape(self) -> str:
        start = self.pos
        self.pos += 1
        if self._at_end():
            raise _end_of_input(len(self.text), "a character after the backslash")
        char = self.text[self.pos]
        if char not in _ESCAPABLE:
            raise _error_at(
                start, f'unknown escape "\\{char}" (only \\" \\\' and \\\\ are allowed)'
            )
        self.pos += 1
        return char

    def _bare(self, op: str) -> str:
        start = self.pos
        if self._peek() in _OPERATOR_CHARS or self._peek() in "()":
            raise _error_at(start, f'expected a value after "{op}", found {self._describe()}')
        while not self._at_end() and not self._at_delimiter() and self._peek() not in _QUOTES:
            self.pos += 1
        word = self.text[start : self.pos]
        if word in _KEYWORDS:
            raise _error_at(
                start, f'expected a value, found the keyword "{word}" (quote it to match the word)'
            )
        return word

    # Scanning helpers.

    def _at_end(self) -> bool:
        return self.pos >= len(self.text)

    def _at_delimiter(self) -> bool:
        char = self.text[self.pos]
        return char.isspace() or char in "()"

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _peek_word(self) -> str:
        match = _IDENTIFIER.match(self.text, self.pos)
        return match.group() if match else ""

    def _skip_space(self) -> bool:
        """Skip whitespace; true when there is more input."""
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.pos < len(self.text)

    def _describe(self) -> str:
        """What stands at the current position, for error messages."""
        rest = self.text[self.pos :]
        if rest[0] in _QUOTES:
            closing = rest.find(rest[0], 1)
            snippet = rest if closing < 0 else rest[: closing + 1]
            return f"the string {_shorten(snippet)}"
        if rest[0] in "()":
            return f'"{rest[0]}"'
        # An operator is shown alone, so "==" reads as found "=" rather than a run of junk.
        match = re.match(r"[=!<>:]+|[^\s()=!<>:\"']+", rest)
        return f'"{_shorten(match.group() if match else rest[0])}"'


def _shorten(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- Compiling -----------------------------------------------------------------------------


class _Params:
    """Collects values and hands out their numbered, typed placeholders."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.values: list[object] = []

    def add(self, value: object, sql_type: str) -> str:
        self.values.append(value)
        return f"${self.first + len(self.values) - 1}::{sql_type}"


def _compile(node: Node, params: _Params) -> str:
    # Every leaf is a non-null boolean (comparisons are COALESCEd), so NOT is a real negation.
    if isinstance(node, Comparison):
        return _compile_comparison(node, params)
    if isinstance(node, Not):
        return f"(NOT {_compile(node.operand, params)})"
    joiner = " AND " if isinstance(node, And) else " OR "
    return "(" + joiner.join(_compile(operand, params) for operand in node.operands) + ")"


def _compile_comparison(c: Comparison, params: _Params) -> str:
    field = _FIELDS[c.field]
    if c.op not in field.operators:
        raise _error_at(
            c.op_position,
            f'field "{c.field}" does not support "{c.op}"; use one of: '
            + " ".join(field.operators),
        )
    if c.value.is_null:
        return _compile_null(c, field)
    if field.kind == "text":
        return _compile_text(c, field, params)
    if field.kind == "integer":
        return _coalesce(
            f"{field.column} {_SQL_OPERATORS[c.op]} {params.add(_integer(c), 'bigint')}"
        )
    if field.kind == "timestamp":
        placeholder = params.add(_timestamp(c), "timestamptz")
        return _coalesce(f"{field.column} {_SQL_OPERATORS[c.op]} {placeholder}")
    if field.kind == "public_url":
        return _compile_public_url(c, field, params)
    if field.kind == "upload_status":
        # Every stored file is complete: uploads are all-or-nothing.
        return _constant((c.value.text.casefold() == "complete") == (c.op == "="))
    # user_defined_id is never set here, and a comparison with an unset value is never true.
    return "FALSE"


def _coalesce(comparison: str) -> str:
    return f"COALESCE({comparison}, FALSE)"


def _constant(value: bool) -> str:
    return "TRUE" if value else "FALSE"


def _compile_null(c: Comparison, field: _Field) -> str:
    if c.op not in _EQUALITY:
        raise _error_at(c.value.position, f'null can only be compared with = or !=, not "{c.op}"')
    wants_null = c.op == "="
    if field.kind == "upload_status":
        return _constant(not wants_null)
    if field.kind == "always_null":
        return _constant(wants_null)
    return f"({field.column} IS {'' if wants_null else 'NOT '}NULL)"


def _compile_text(c: Comparison, field: _Field, params: _Params) -> str:
    placeholder = params.add(c.value.text, "text")
    if c.op == ":":
        return _coalesce(f"strpos(lower({field.column}), lower({placeholder})) > 0")
    return _coalesce(f"{field.column} {_SQL_OPERATORS[c.op]} {placeholder}")


def _compile_public_url(c: Comparison, field: _Field, params: _Params) -> str:
    token = _url_token(c.value.text)
    if token is None:
        # Not the shape of any public URL: equal to none, different from every live one.
        return "FALSE" if c.op == "=" else f"({field.column} IS NOT NULL)"
    return _coalesce(f"{field.column} {_SQL_OPERATORS[c.op]} {params.add(token, 'text')}")


def _url_token(url: str) -> str | None:
    """The token of a `<base>/<token>/<name>` URL: its second-to-last path segment."""
    segments = url.split("/")
    if len(segments) < 2 or not segments[-2] or not segments[-1]:
        return None
    return segments[-2]


def _integer(c: Comparison) -> int:
    text = c.value.text
    if _INTEGER.fullmatch(text):
        number = int(text)
        if _INT64_MIN <= number <= _INT64_MAX:
            return number
    raise _error_at(c.value.position, f'{c.field} needs an integer, found "{_shorten(text)}"')


def _timestamp(c: Comparison) -> datetime:
    text = c.value.text
    try:
        if _INTEGER.fullmatch(text):
            return datetime.fromtimestamp(int(text), UTC)
        when = _parse_rfc3339(text)
        # Normalised here so that an out-of-range instant is a 400, not a driver error.
        return when.astimezone(UTC) if when is not None else _bad_timestamp(c)
    except (ValueError, OverflowError, OSError):
        return _bad_timestamp(c)


def _bad_timestamp(c: Comparison) -> NoReturn:
    raise _error_at(
        c.value.position,
        f'{c.field} needs an RFC 3339 timestamp such as "2026-03-15T00:00:00Z" or Unix seconds,'
        f' found "{_shorten(c.value.text)}"',
    )


def _parse_rfc3339(text: str) -> datetime | None:
    """RFC 3339 date-time; a bare date is midnight and a missing offset is UTC."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    microsecond = int((fraction or "0")[:6].ljust(6, "0"))
    return datetime(
        int(year),
        int(month),
        int(day),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        microsecond,
        tzinfo=_offset(offset),
    )


def _offset(text: str | None) -> timezone:
    if text is None or text in ("Z", "z"):
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError("offset out of range")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)
