"""Token-cache records: the compact form, the previous release's JSON that edges still read,
and the rolling upgrade that rewrites it; the token cache's settings are checked at start."""

from __future__ import annotations

import dataclasses
import json

import aiohttp
import pytest
from pydantic import ValidationError

from shared import token_cache
from shared.resources import Resources
from shared.settings import Settings
from shared.token_cache import UrlRecord
from tests.conftest import WorkerHandle
from tests.helpers import create, fetch, pdf, png, upload, wait_for

FILE = "file_0b7e2c1a-4f3d-4e8a-9c51-3d2f6a7b8c9d"
RECORD = UrlRecord(
    file_id=FILE,
    name=f"{FILE}.png",
    object_key=f"objects/{FILE}",
    content_type="image/png",
    size=10240,
    etag='"00112233445566778899aabbccddeeff"',
    last_modified=1_764_000_000,
    deadline_ms=1_766_000_000_123,
    version=3,
)
# What the previous release wrote for RECORD, byte for byte.
OLD_JSON = (
    b'{"file_id":"file_0b7e2c1a-4f3d-4e8a-9c51-3d2f6a7b8c9d",'
    b'"name":"file_0b7e2c1a-4f3d-4e8a-9c51-3d2f6a7b8c9d.png",'
    b'"object_key":"objects/file_0b7e2c1a-4f3d-4e8a-9c51-3d2f6a7b8c9d",'
    b'"content_type":"image/png","size":10240,"etag":"\\"00112233445566778899aabbccddeeff\\"",'
    b'"last_modified":1764000000,"deadline_ms":1766000000123,"version":3}'
)


@pytest.mark.parametrize(
    ("content_type", "ext"),
    [("image/png", "png"), ("image/jpeg", "jpg"), ("video/mp4", "mp4"), ("application/pdf", "pdf")],
)
@pytest.mark.parametrize("deadline_ms", [None, 1_766_000_000_123])
def test_every_record_we_write_takes_62_bytes_and_decodes_to_itself(
    content_type: str, ext: str, deadline_ms: int | None
) -> None:
    record = dataclasses.replace(
        RECORD, content_type=content_type, name=f"{FILE}.{ext}", deadline_ms=deadline_ms
    )
    raw = record.encode()
    assert len(raw) == 62 and raw[0] == 1
    assert UrlRecord.decode(raw) == record


def test_the_previous_releases_json_records_still_decode() -> None:
    assert UrlRecord.decode(OLD_JSON) == RECORD
    assert len(OLD_JSON) > 5 * len(RECORD.encode())


@pytest.mark.parametrize(
    "change",
    [
        {"object_key": "elsewhere/x"},  # not derived from the file id
        {"name": f"{FILE}.jpg"},  # not the type's extension
        {"content_type": "image/gif"},  # no type code
        {"file_id": FILE.upper(), "name": f"{FILE.upper()}.png"},  # would not round-trip
        {"etag": '"abc"'},  # not 16 bytes of hex
        {"size": -1},  # out of range
        {"version": 2**32},
    ],
)
def test_a_record_the_compact_form_cannot_hold_is_written_as_json(
    change: dict[str, object],
) -> None:
    record = dataclasses.replace(RECORD, **change)  # type: ignore[arg-type]
    raw = record.encode()
    assert raw.startswith(b"{") and json.loads(raw)["file_id"] == record.file_id
    assert UrlRecord.decode(raw) == record


@pytest.mark.parametrize(
    "raw",
    [
        b"\x01" + b"\x00" * 30,  # cut short
        b"\x01\x0f" + b"\x00" * 60,  # unknown type code
        b"\x02" + b"\x00" * 61,  # unknown format
        b"{not json",
        b"[1, 2]",
    ],
)
def test_a_corrupt_record_raises_what_the_edge_turns_into_404(raw: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        UrlRecord.decode(raw)


def test_token_cache_settings_are_checked_at_start() -> None:
    with pytest.raises(ValidationError, match="cluster"):
        Settings(token_redis_mode="cluster", token_redis_wait_replicas=1)
    with pytest.raises(ValidationError, match="REDIS_TIMEOUT"):
        Settings(token_redis_wait_replicas=1, token_redis_wait_timeout=5, redis_timeout=5)
    Settings(redis_timeout=1)  # the wait timeout matters only when there is a wait
    with pytest.raises(ValidationError):
        Settings(token_redis_mode="sentinel")  # type: ignore[arg-type]


async def test_an_edge_serves_an_entry_in_the_previous_json_format(
    api: aiohttp.ClientSession, res: Resources
) -> None:
    f = await upload(api, pdf())
    _, made = await create(api, f["id"], {})
    token = made["public_url"].split("/")[-2]
    record = await res.tokens.get(token)
    assert record is not None
    old = json.dumps(dataclasses.asdict(record), separators=(",", ":")).encode()
    await res.redis.set(token_cache.key(token), old)  # as the previous release wrote it
    status, body = await fetch(made["public_url"])
    assert status == 200 and len(body) == f["bytes"]


async def test_reconcile_rewrites_entries_in_an_older_format(
    api: aiohttp.ClientSession, res: Resources, worker: WorkerHandle
) -> None:
    f = await upload(api, png())
    _, made = await create(api, f["id"], {"expires_after": 3600})
    token = made["public_url"].split("/")[-2]
    record = await res.tokens.get(token)
    assert record is not None
    old = json.dumps(dataclasses.asdict(record), separators=(",", ":")).encode()
    await res.redis.set(token_cache.key(token), old, pxat=record.deadline_ms)

    async def rewritten() -> bool:
        return await res.redis.get(token_cache.key(token)) == record.encode()

    await wait_for(rewritten, timeout=15, what="reconcile rewriting the JSON entry")
    ttl = await res.redis.pttl(token_cache.key(token))
    assert 0 < ttl <= 3600_000
    assert (await fetch(made["public_url"]))[0] == 200
