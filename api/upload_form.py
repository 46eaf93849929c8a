"""The REST upload's form fields, as pure state: what each multipart part means.

`api/rest.py` streams the parts; this decides, part by part, whether the form is still
valid, so that a bad form fails before any byte is stored where it can (expires_after sent
before the file part is checked before the bytes stream). The fields may come in any
order around the file part (files-api.md, ours). Unknown fields are ignored, as the
openai SDK expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared import rules
from shared.errors import InvalidArgument

FIELD_LIMIT = 4096  # bytes in a non-file field
FILE_FIELD = "file"
TEXT_FIELDS = frozenset(
    {"purpose", "expires_after", "expires_after[anchor]", "expires_after[seconds]"}
)


def decode_field(name: str, raw: bytes, charset: str = "utf-8") -> str:
    """A text field's value: at most FIELD_LIMIT bytes, decodable, storable (no NUL)."""
    if len(raw) > FIELD_LIMIT:
        raise InvalidArgument(f"form field {name!r} is too long")
    try:
        text = raw.decode(charset)
    except (UnicodeDecodeError, LookupError):
        raise InvalidArgument(f"form field {name!r} is not valid text") from None
    return rules.check_text(f"form field {name!r}", text)


@dataclass
class UploadForm:
    """The fields seen so far and whether the file part has come."""

    limits: rules.Limits
    fields: dict[str, str] = field(default_factory=dict)
    has_file: bool = False

    @staticmethod
    def wants(name: str | None) -> bool:
        """Whether a non-file part is read (the others are skipped unread)."""
        return name in TEXT_FIELDS

    def add_field(self, name: str, value: str) -> None:
        if name not in TEXT_FIELDS:
            return
        if name in self.fields:
            raise InvalidArgument(f"form field {name!r} given twice")
        self.fields[name] = rules.check_purpose(value) if name == "purpose" else value

    def start_file(self) -> None:
        """The file part begins: refuse a second one, and a bad lifetime sent before it
        (rather than stream 50 MiB for nothing)."""
        if self.has_file:
            raise InvalidArgument("send exactly one 'file' part")
        self.has_file = True
        if self._pair_incomplete():
            return  # the other half of OpenAI's pair may follow the file part
        early = rules.upload_expires_after(self.fields)
        if early is not None:
            rules.check_expires_after(self.limits, early)

    def _pair_incomplete(self) -> bool:
        anchor = "expires_after[anchor]" in self.fields
        seconds = "expires_after[seconds]" in self.fields
        return anchor != seconds and not self.fields.get("expires_after", "").strip()

    def purpose(self) -> str:
        return self.fields.get("purpose", "")

    def expires_after(self) -> int | None:
        """The form's lifetime, complete once every part is read; checked against the range."""
        if not self.has_file:
            raise InvalidArgument("missing the 'file' part")
        seconds = rules.upload_expires_after(self.fields)
        return None if seconds is None else rules.check_expires_after(self.limits, seconds)
