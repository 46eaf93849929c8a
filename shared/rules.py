"""The contract's rules (files-api.md) as pure functions over plain values.

No I/O and no framework here: callers read rows and settings, hand the facts over as
frozen dataclasses, and act on the answer. Each rule raises a domain error with the
message the caller sees. A test proves this module imports no database, Redis or transport
client, and unit tests check every rule in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared import sniff
from shared.errors import FailedPrecondition, InvalidArgument, PayloadTooLarge, QuotaExceeded

MAX_FILENAME = 1024
MAX_PURPOSE = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The configurable numbers the rules use (Settings.limits builds them)."""

    max_upload_bytes: int
    public_url_max_bytes: int
    expires_after_min: int
    expires_after_max: int
    public_url_quota: int
    list_limit_max: int


# --- files ------------------------------------------------------------------------------


def check_text(what: str, text: str) -> str:
    """Text PostgreSQL can store: no NUL, and valid Unicode (a header's undecodable byte
    arrives as a lone surrogate, which the driver cannot encode: a 400, not a 500)."""
    if "\x00" in text:
        raise InvalidArgument(f"{what} must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} is not valid UTF-8") from None
    return text


def check_filename(name: str | None) -> str:
    """The stored name: trimmed, non-empty, at most 1024 characters, no control characters,
    valid UTF-8."""
    name = check_text("file name", (name or "").strip())
    if not name:
        raise InvalidArgument("the file needs a name")
    if len(name) > MAX_FILENAME or any(ord(c) < 32 for c in name):
        raise InvalidArgument(
            "file name must be at most 1024 characters, without control characters"
        )
    return name


def check_purpose(purpose: str) -> str:
    """A free-form label, stored and echoed: at most 1024 characters of storable text."""
    if len(purpose) > MAX_PURPOSE:
        raise InvalidArgument(f"purpose must be at most {MAX_PURPOSE} characters")
    return check_text("purpose", purpose)


def check_upload_size(limits: Limits, size: int) -> None:
    if size > limits.max_upload_bytes:
        raise PayloadTooLarge(
            f"file exceeds the maximum upload size of {limits.max_upload_bytes} bytes"
        )


def check_content_format(fmt: str | None, content_type: str) -> None:
    """A file's bytes are read as they are, or as text for text/* files."""
    if fmt not in (None, "original", "text"):
        raise InvalidArgument("format must be original or text")
    if fmt == "text" and not content_type.startswith("text/"):
        raise FailedPrecondition("format=text is only available for text/* files")


# --- expires_after ----------------------------------------------------------------------


def check_expires_after(limits: Limits, seconds: int) -> int:
    """The contract's range for file and URL lifetimes (3600..2592000 by default)."""
    lo, hi = limits.expires_after_min, limits.expires_after_max
    if not lo <= seconds <= hi:
        raise InvalidArgument(f"expires_after must be between {lo} and {hi} seconds, got {seconds}")
    return seconds


def _int_field(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer number of seconds, got {raw!r}") from None


def upload_expires_after(fields: Mapping[str, str]) -> int | None:
    """An upload form's lifetime: `expires_after=N`, or OpenAI's
    `expires_after[anchor]=created_at` with `expires_after[seconds]=N`; None if absent."""
    plain = fields.get("expires_after", "").strip()
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if plain and (anchor is not None or seconds is not None):
        raise InvalidArgument(
            "give expires_after either as an integer or as anchor+seconds, not both"
        )
    if anchor is not None or seconds is not None:
        if anchor != "created_at":
            raise InvalidArgument("expires_after[anchor] must be created_at")
        if seconds is None:
            raise InvalidArgument("expires_after[seconds] is required with expires_after[anchor]")
        return _int_field("expires_after[seconds]", seconds)
    return _int_field("expires_after", plain) if plain else None


def json_expires_after(value: object) -> int | None:
    """A JSON body's `expires_after`: an integer or null. As in JSON Schema, 3600.0 is an
    integer; a boolean is not a number here."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument("expires_after must be an integer number of seconds or null")
    return value


# --- public URLs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShareableFile:
    """The facts about a file that decide whether, and how long, it may be public."""

    size: int
    sniffed_type: str | None
    content_type: str
    expires_at: datetime | None


def check_shareable(limits: Limits, file: ShareableFile) -> None:
    """Only non-empty PNG, JPEG, MP4 and PDF files (by content) up to the size limit."""
    if file.size == 0:
        raise InvalidArgument("an empty file cannot be made public")
    if file.sniffed_type not in sniff.PUBLIC_EXTENSIONS:
        raise InvalidArgument(
            "only PNG, JPEG, MP4 and PDF files (judged by their content) can be made public; "
            f"this file is {file.content_type}"
        )
    if file.size > limits.public_url_max_bytes:
        raise InvalidArgument(
            f"files over {limits.public_url_max_bytes} bytes cannot be made public"
        )


def url_deadline(
    file_expires_at: datetime | None, now: datetime, expires_after: int | None
) -> datetime | None:
    """When a URL made `now` dies: the file's own deadline (or never) when no lifetime is
    given; else `now + expires_after` in whole seconds, which must not outlive the file.

    `expires_after` is assumed already checked against the contract's range.
    """
    if expires_after is None:
        return file_expires_at  # inherited, or indefinite
    # Whole seconds, so that the expires_at we report is exactly when the URL dies.
    deadline = (now + timedelta(seconds=expires_after)).replace(microsecond=0)
    if file_expires_at is not None and deadline > file_expires_at:
        remaining = int((file_expires_at - now).total_seconds())
        raise InvalidArgument(
            f"a public URL cannot outlive its file: expires_after {expires_after} exceeds the "
            f"file's remaining lifetime of {remaining} seconds"
        )
    return deadline


def is_past(deadline: datetime | None, now: datetime) -> bool:
    """True once a deadline is reached (a URL dies at its deadline, not a moment later)."""
    return deadline is not None and deadline <= now


def check_quota(limits: Limits, active: int) -> None:
    """A new URL needs a free slot: at most `public_url_quota` live URLs per team."""
    if active >= limits.public_url_quota:
        raise QuotaExceeded(f"active public URL limit ({limits.public_url_quota}) reached")
