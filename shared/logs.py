"""Structured logging for every process: one JSON line per event (console for humans).

Libraries' records (the standard library's `logging`: aiohttp, grpc, arq, asyncio) go
through the same processors, so every line has one shape and one set of guarantees:
- a traceback names code locations only, never a frame's local variables (where a caller's
  key or a settings object would be);
- secrets are redacted from every value, tracebacks included: the settings' passwords and
  keys wherever they appear, credentials inside URLs, Bearer tokens, API keys and operator
  tokens (cut to their first 4 characters).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.tracebacks import ExceptionDictTransformer

from shared.settings import Settings

REDACTED = "[redacted]"
_SHOWN = 4  # characters of a token or key kept: enough to tell them apart in a log
_MIN_SECRET = 6  # shorter configured values would redact ordinary words

# Credentials inside a URL (`scheme://user:password@host`), a Bearer credential, and our own
# key and token formats (`shared/ids.py`, `shared/ops_tokens.py`) wherever they appear.
_URL_PASSWORD = re.compile(r"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
_BEARER = re.compile(
    r"(?P<keep>Bearer\s+(?!fcdn_|fcops_)[A-Za-z0-9_.~+/=-]{" + str(_SHOWN) + r"})[^\s\"',]+"
)
_KEYS = re.compile(r"(?P<keep>(?:fcdn_|fcops_)[A-Za-z0-9_-]{" + str(_SHOWN) + r"})[A-Za-z0-9_-]+")


class Redactor:
    """A structlog processor: every string in the event, however nested, with secrets cut."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first: a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)

    def __call__(self, _: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
        for key, value in event_dict.items():
            event_dict[key] = self.scrub(value)
        return event_dict

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    def text(self, s: str) -> str:
        for secret in self.secrets:
            if secret in s:
                s = s.replace(secret, REDACTED)
        s = without_url_passwords(s)
        s = _BEARER.sub(r"\g<keep>…", s)
        return _KEYS.sub(r"\g<keep>…", s)


def without_url_passwords(text: str) -> str:
    """`text` with the password of every URL in it cut (`redis://:[redacted]@host`)."""
    return _URL_PASSWORD.sub(rf"\g<keep>{REDACTED}@", text)


def configured_secrets(settings: Settings) -> list[str]:
    """The settings' secret values: URL passwords, the S3 secret key, the pagination secret."""
    found = [settings.s3_secret_key.get_secret_value()]
    if settings.pagination_secret is not None:
        found.append(settings.pagination_secret.get_secret_value())
    for url in (settings.database_url, settings.redis_url, settings.token_redis_url):
        if url:
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            if password:
                found.append(password)
    return found


# Client libraries of our dependencies: what they log with an exception is their connection
# trouble (a pool that cannot reconnect while PostgreSQL is down), one line, no traceback.
_DEPENDENCY_LOGGERS = {"asyncpg", "redis", "urllib3", "minio", "aiohttp.client"}


def _dependency_trouble(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    name = str(event_dict.get("logger", ""))
    if name.split(".")[0] in _DEPENDENCY_LOGGERS or name in _DEPENDENCY_LOGGERS:
        exc_info = event_dict.pop("exc_info", None)
        exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
        if isinstance(exc, BaseException):
            event_dict["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return event_dict


def _client_trouble(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    """aiohttp's server logs a request it could not parse (a client's bytes: a bad header, a
    line too long; it answers 400 itself) as an error with a traceback: one info line."""
    if event_dict.get("logger") != "aiohttp.server":
        return event_dict
    exc_info = event_dict.get("exc_info")
    exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    if isinstance(exc, HttpProcessingError):
        del event_dict["exc_info"]
        event_dict["level"] = "info"
        event_dict["event"] = "malformed request"
        event_dict["error"] = f"{type(exc).__name__}: {exc.message}".splitlines()[0][:200]
    return event_dict


def processors(settings: Settings) -> list[structlog.typing.Processor]:
    """What every event goes through after it has its level and time: its exception made
    text or data without frame locals, then redaction, then rendering."""
    redact = Redactor(configured_secrets(settings))
    if settings.log_format == "console":
        return [
            structlog.processors.format_exc_info,  # plain text: code locations only
            redact,
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
        ]
    return [
        structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False, locals_max_string=0)
        ),
        redact,
        structlog.processors.JSONRenderer(),
    ]


def configure(settings: Settings, process: str) -> None:
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    stamped: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*stamped, *processors(settings)],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write(2) per line: processes sharing stderr (the edge's workers) never interleave.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
    # Libraries log through the standard library; keep them quiet but visible, in our shape.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *stamped,
                structlog.stdlib.add_logger_name,
                _dependency_trouble,
                _client_trouble,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *processors(settings),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(level, logging.WARNING))
