"""Identifiers and secrets: file ids, public-URL tokens, API keys."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid

from shared.errors import InvalidArgument

# The whole id (fullmatch: `$` alone would let a trailing newline through); the OpenAPI
# document states the same pattern.
FILE_ID_PATTERN = "file_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_FILE_ID = re.compile(FILE_ID_PATTERN)
API_KEY_PREFIX = "fcdn_"


def new_file_id() -> str:
    """`file_<uuid4>`, the shape upstream uses."""
    return f"file_{uuid.uuid4()}"


def check_file_id(file_id: str) -> str:
    if not _FILE_ID.fullmatch(file_id):
        raise InvalidArgument(f"malformed file id {file_id[:80]!r}: expected file_<uuid>")
    return file_id


def is_file_id(file_id: str) -> bool:
    return bool(_FILE_ID.fullmatch(file_id))


def object_key(file_id: str) -> str:
    return f"objects/{file_id}"


def new_token() -> str:
    """128 random bits, base64url without padding: 22 characters, like upstream's."""
    return secrets.token_urlsafe(16)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> bytes:
    # Keys carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(key.encode()).digest()
