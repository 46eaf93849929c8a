"""Structured logging for every process: one JSON line per event (console for humans)."""

from __future__ import annotations

import logging
import sys

import structlog

from shared.settings import Settings


def configure(settings: Settings, process: str) -> None:
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if settings.log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write(2) per line: processes sharing stderr (the edge's workers) never interleave.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(process=process)
    # Libraries log through the standard library; keep them quiet but visible.
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr)
