"""Content sniffing and identifiers, without servers: what the first bytes prove, which
type is stored, and the shapes of file ids, tokens and API keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import ids, sniff
from shared.errors import InvalidArgument

SAMPLE_MP4 = Path(__file__).parent / "data" / "sample.mp4"


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 8, sniff.PNG),
        (b"\xff\xd8\xff\xe0", sniff.JPEG),
        (b"%PDF-1.7\n", sniff.PDF),
        (b"\x00\x00\x00\x18ftypisom\x00\x00", sniff.MP4),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00", sniff.MP4),
    ],
)
def test_the_first_bytes_prove_the_public_types(head: bytes, kind: str) -> None:
    assert sniff.sniff(head) == kind


def test_a_real_mp4_is_recognised() -> None:
    assert sniff.sniff(SAMPLE_MP4.read_bytes()[: sniff.SNIFF_BYTES]) == sniff.MP4


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\x89PNG",  # a truncated signature
        b"GIF89a",
        b"<html><img src=x></html>",
        b"\x00\x00\x00\x18ftypheic\x00\x00",  # HEIC is ISO media, not MP4 video
        b"\x00\x00\x00\x18ftypqt  \x00\x00",  # QuickTime
        b"\x00\x00\x00\x18ftypM4A \x00\x00",  # audio only
    ],
)
def test_anything_else_is_not_sniffed(head: bytes) -> None:
    assert sniff.sniff(head) is None


def test_every_public_type_has_its_url_extension() -> None:
    assert sniff.PUBLIC_EXTENSIONS == {
        sniff.PNG: "png",
        sniff.JPEG: "jpg",
        sniff.MP4: "mp4",
        sniff.PDF: "pdf",
    }


@pytest.mark.parametrize(
    ("sniffed", "declared", "name", "stored"),
    [
        (sniff.PNG, "text/html", "a.txt", sniff.PNG),  # the content wins
        (None, "Text/Markdown; charset=utf-8", "a.bin", "text/markdown"),
        (None, "application/octet-stream", "notes.txt", "text/plain"),  # by extension
        (None, None, "data.csv", "text/csv"),
        (None, "nonsense", "no-extension", "application/octet-stream"),
    ],
)
def test_the_stored_type_falls_back_from_content_to_declared_to_name(
    sniffed: str | None, declared: str | None, name: str, stored: str
) -> None:
    assert sniff.stored_type(sniffed, declared, name) == stored


def test_file_ids_have_upstreams_shape() -> None:
    file_id = ids.new_file_id()
    assert ids.is_file_id(file_id) and ids.check_file_id(file_id) == file_id
    assert ids.object_key(file_id) == f"objects/{file_id}"


@pytest.mark.parametrize("bad", ["", "file_123", "nope", "FILE_" + "0" * 36, "x" * 500])
def test_a_malformed_file_id_is_invalid_argument_quoting_at_most_80_characters(bad: str) -> None:
    assert not ids.is_file_id(bad)
    with pytest.raises(InvalidArgument) as err:
        ids.check_file_id(bad)
    assert repr(bad[:80]) in err.value.message


def test_tokens_are_22_url_safe_characters_and_never_repeat() -> None:
    tokens = {ids.new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(t) == 22 and t.replace("-", "").replace("_", "").isalnum() for t in tokens)


def test_api_keys_are_prefixed_and_stored_only_as_a_hash() -> None:
    key = ids.new_api_key()
    assert key.startswith(ids.API_KEY_PREFIX)
    digest = ids.hash_api_key(key)
    assert len(digest) == 32 and key.encode() not in digest
    assert ids.hash_api_key(key) == digest != ids.hash_api_key(key + "x")
