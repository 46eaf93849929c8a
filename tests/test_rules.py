"""The contract's rules as pure functions: names, lifetimes, who may be public, deadlines,
quota. No servers: each rule is checked on plain values in microseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared import rules
from shared.errors import FailedPrecondition, InvalidArgument, PayloadTooLarge, QuotaExceeded
from shared.rules import Limits, ShareableFile

LIMITS = Limits(
    max_upload_bytes=1000,
    public_url_max_bytes=500,
    expires_after_min=3600,
    expires_after_max=2_592_000,
    public_url_quota=3,
    list_limit_max=100,
)
NOW = datetime(2026, 3, 15, 12, 0, 0, 250_000, tzinfo=UTC)


def png(size: int = 100, expires_at: datetime | None = None) -> ShareableFile:
    return ShareableFile(size, "image/png", "image/png", expires_at)


# --- file names -------------------------------------------------------------------------


def test_a_filename_is_trimmed() -> None:
    assert rules.check_filename("  a.png \n") == "a.png"


@pytest.mark.parametrize("name", [None, "", "   "])
def test_a_file_needs_a_name(name: str | None) -> None:
    with pytest.raises(InvalidArgument, match="needs a name"):
        rules.check_filename(name)


@pytest.mark.parametrize("name", ["a\x01b", "a\nb.png", "x" * 1025])
def test_control_characters_and_overlong_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="at most 1024 characters"):
        rules.check_filename(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [("a\x00b", "must not contain NUL"), ("caf\udce9.png", "not valid UTF-8")],
)
def test_names_postgresql_cannot_store_are_refused(name: str, message: str) -> None:
    """A NUL, or a header's undecodable byte (a lone surrogate): a 400, never a 500."""
    with pytest.raises(InvalidArgument, match=message):
        rules.check_filename(name)


def test_a_name_of_exactly_1024_characters_is_fine() -> None:
    assert rules.check_filename("x" * 1024) == "x" * 1024


# --- sizes and formats ------------------------------------------------------------------


def test_an_upload_may_reach_the_limit_but_not_pass_it() -> None:
    rules.check_upload_size(LIMITS, 1000)
    with pytest.raises(PayloadTooLarge) as err:
        rules.check_upload_size(LIMITS, 1001)
    assert err.value.message == "file exceeds the maximum upload size of 1000 bytes"


@pytest.mark.parametrize("fmt", [None, "original"])
def test_any_file_reads_in_its_original_format(fmt: str | None) -> None:
    rules.check_content_format(fmt, "image/png")


def test_an_empty_format_is_not_a_format() -> None:
    with pytest.raises(InvalidArgument, match="original or text"):
        rules.check_content_format("", "image/png")


def test_text_format_is_for_text_files_only() -> None:
    rules.check_content_format("text", "text/plain")
    with pytest.raises(FailedPrecondition):
        rules.check_content_format("text", "image/png")
    with pytest.raises(InvalidArgument, match="original or text"):
        rules.check_content_format("markdown", "text/plain")


# --- expires_after ----------------------------------------------------------------------


def test_expires_after_bounds_are_inclusive() -> None:
    assert rules.check_expires_after(LIMITS, 3600) == 3600
    assert rules.check_expires_after(LIMITS, 2_592_000) == 2_592_000
    for bad in (3599, 2_592_001, 0, -1):
        with pytest.raises(InvalidArgument) as err:
            rules.check_expires_after(LIMITS, bad)
        assert err.value.message == (
            f"expires_after must be between 3600 and 2592000 seconds, got {bad}"
        )


@pytest.mark.parametrize(
    ("fields", "seconds"),
    [
        ({}, None),
        ({"expires_after": ""}, None),
        ({"expires_after": " 7200 "}, 7200),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "7200"}, 7200),
    ],
)
def test_an_upload_form_gives_its_lifetime_either_way(
    fields: dict[str, str], seconds: int | None
) -> None:
    assert rules.upload_expires_after(fields) == seconds


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"expires_after": "soon"}, "expires_after must be an integer"),
        ({"expires_after": "7200", "expires_after[seconds]": "7200"}, "not both"),
        ({"expires_after[anchor]": "now", "expires_after[seconds]": "7200"}, "created_at"),
        ({"expires_after[anchor]": "created_at"}, "[seconds] is required"),
        ({"expires_after[seconds]": "7200"}, "must be created_at"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "1.5"}, "integer"),
    ],
)
def test_a_malformed_upload_lifetime_says_what_is_wrong(
    fields: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[")):
        rules.upload_expires_after(fields)


def test_a_json_lifetime_is_an_integer_or_null() -> None:
    assert rules.json_expires_after(None) is None
    assert rules.json_expires_after(7200) == 7200
    assert rules.json_expires_after(7200.0) == 7200  # JSON Schema's integer
    for bad in (True, "7200", 7200.5, float("inf"), [7200]):
        with pytest.raises(InvalidArgument, match="integer number of seconds or null"):
            rules.json_expires_after(bad)


# --- who may be public ------------------------------------------------------------------


@pytest.mark.parametrize("sniffed", ["image/png", "image/jpeg", "video/mp4", "application/pdf"])
def test_the_four_public_types_are_shareable(sniffed: str) -> None:
    rules.check_shareable(LIMITS, ShareableFile(100, sniffed, sniffed, None))


def test_the_type_is_judged_by_content_not_by_the_declared_type() -> None:
    with pytest.raises(InvalidArgument) as err:
        rules.check_shareable(LIMITS, ShareableFile(100, None, "image/png", None))
    assert err.value.message.endswith("this file is image/png")


def test_empty_and_oversized_files_are_not_shareable() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        rules.check_shareable(LIMITS, png(0))
    rules.check_shareable(LIMITS, png(500))
    with pytest.raises(InvalidArgument, match="files over 500 bytes"):
        rules.check_shareable(LIMITS, png(501))


# --- deadlines --------------------------------------------------------------------------


def test_without_expires_after_a_url_inherits_the_files_deadline_or_none() -> None:
    file_deadline = NOW + timedelta(days=2)
    assert rules.url_deadline(file_deadline, NOW, None) == file_deadline
    assert rules.url_deadline(None, NOW, None) is None


def test_a_deadline_is_whole_seconds_after_now() -> None:
    deadline = rules.url_deadline(None, NOW, 3600)
    assert deadline == datetime(2026, 3, 15, 13, 0, 0, tzinfo=UTC)


def test_a_url_may_die_with_its_file_but_not_after_it() -> None:
    file_deadline = NOW.replace(microsecond=0) + timedelta(hours=2)
    assert rules.url_deadline(file_deadline, NOW, 7200) == file_deadline
    with pytest.raises(InvalidArgument) as err:
        rules.url_deadline(file_deadline, NOW, 7201)
    assert err.value.message == (
        "a public URL cannot outlive its file: expires_after 7201 exceeds the file's "
        "remaining lifetime of 7199 seconds"
    )


def test_a_url_is_dead_at_its_deadline_not_a_moment_later() -> None:
    assert not rules.is_past(None, NOW)
    assert not rules.is_past(NOW + timedelta(microseconds=1), NOW)
    assert rules.is_past(NOW, NOW)
    assert rules.is_past(NOW - timedelta(seconds=1), NOW)


# --- quota ------------------------------------------------------------------------------


def test_the_quota_allows_up_to_its_limit_of_live_urls() -> None:
    for active in range(3):
        rules.check_quota(LIMITS, active)
    with pytest.raises(QuotaExceeded) as err:
        rules.check_quota(LIMITS, 3)
    assert err.value.message == "active public URL limit (3) reached"


def test_settings_hand_their_numbers_to_the_rules() -> None:
    from shared.settings import Settings

    limits = Settings.from_env({"PUBLIC_URL_QUOTA": "7", "EXPIRES_AFTER_MIN": "1"}).limits
    assert (limits.public_url_quota, limits.expires_after_min) == (7, 1)
    assert limits.expires_after_max == 2_592_000 and limits.list_limit_max == 100
