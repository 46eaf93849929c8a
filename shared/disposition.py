"""Content-Disposition values that are safe for any file name (RFC 6266 + RFC 5987)."""

from __future__ import annotations

import re
from urllib.parse import quote

_UNSAFE_ASCII = re.compile(r'[^\x20-\x7e]|["\\%;]')


def content_disposition(kind: str, filename: str) -> str:
    """`kind; filename="<ascii fallback>"; filename*=UTF-8''<percent-encoded>`.

    The quoted fallback never carries quotes, backslashes, control or non-ASCII characters
    (header injection, mojibake); browsers use the exact name from `filename*`.
    """
    fallback = _UNSAFE_ASCII.sub("_", filename) or "file"
    encoded = quote(filename, safe="!#$&+-.^_`|~")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
