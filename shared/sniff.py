"""Content types: judged from the file's first bytes, not from its name or declared type."""

from __future__ import annotations

import mimetypes

SNIFF_BYTES = 32  # enough for every signature below

PNG = "image/png"
JPEG = "image/jpeg"
MP4 = "video/mp4"
PDF = "application/pdf"

# The types a public URL may serve, with the URL's extension.
PUBLIC_EXTENSIONS = {PNG: "png", JPEG: "jpg", MP4: "mp4", PDF: "pdf"}

# ISO base media brands that are MP4 video (HEIC, QuickTime and audio-only brands are not).
_MP4_BRANDS = {
    b"isom",
    b"iso2",
    b"iso3",
    b"iso4",
    b"iso5",
    b"iso6",
    b"iso7",
    b"iso8",
    b"iso9",
    b"mp41",
    b"mp42",
    b"mp71",
    b"avc1",
    b"av01",
    b"dash",
    b"M4V ",
    b"M4VH",
    b"M4VP",
    b"mmp4",
    b"msnv",
    b"f4v ",
    b"NDSC",
    b"NDSH",
    b"NDXC",
    b"NDXH",
    b"XAVC",
    b"3gp5",
}


def sniff(head: bytes) -> str | None:
    """The MIME type proven by the leading bytes, for the types we recognise."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"%PDF-"):
        return PDF
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _MP4_BRANDS:
        return MP4
    return None


def stored_type(sniffed: str | None, declared: str | None, filename: str) -> str:
    """Sniffed type, else the part's declared type, else by extension, else octet-stream."""
    if sniffed:
        return sniffed
    if declared:
        main = declared.split(";", 1)[0].strip().lower()
        if "/" in main and main != "application/octet-stream":
            return main
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or "application/octet-stream"
