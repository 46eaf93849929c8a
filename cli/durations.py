"""Human-friendly durations for the command line: `90s`, `15m`, `1h`, `7d`, `1d12h`, `2w`,
or plain seconds. The API wants seconds; people think in hours and days."""

from __future__ import annotations

import re

import click

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# ASCII digits only (`\d` and str.isdigit also take superscripts and other scripts' digits),
# and few enough for int().
_NUMBER = "[0-9]{1,15}"
_PART = re.compile(f"({_NUMBER})([smhdw])")
_WHOLE = re.compile(f"{_NUMBER}|(?:{_NUMBER}[smhdw])+")


def parse_duration(text: str) -> int:
    """Seconds in `text`; ValueError with a readable reason if it is not a duration."""
    raw = text.strip().lower().replace(" ", "")
    if not _WHOLE.fullmatch(raw):
        raise ValueError(
            f"{text!r} is not a duration: use seconds or a number with a unit, "
            "s m h d w (e.g. 90s, 15m, 1h, 7d, 1d12h)"
        )
    if raw.isdigit():
        return int(raw)
    return sum(int(n) * UNITS[unit] for n, unit in _PART.findall(raw))


def format_duration(seconds: int) -> str:
    """The inverse, for messages: 129600 -> '1d12h'."""
    if seconds <= 0:
        return "0s"
    out = []
    for unit in ("w", "d", "h", "m", "s"):
        n, seconds = divmod(seconds, UNITS[unit])
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """A click parameter holding seconds; a bad value is a usage error (exit code 2)."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()
