"""The worker's loops say what they wait for: the dependency that failed, or our own bug."""

from __future__ import annotations

import structlog

from shared.dependencies import failed_dependency

__all__ = ["failed_dependency", "log_failure"]


def log_failure(log: structlog.typing.FilteringBoundLogger, loop: str, exc: Exception) -> None:
    """One line for a failed pass of a worker loop: a warning naming the dependency it waits
    for, or our own bug with its traceback."""
    dependency = failed_dependency(exc)
    if dependency is None:
        log.error(f"{loop} failed; will retry", exc_info=exc)
    else:
        log.warning(f"{loop} waiting", dependency=dependency, error=str(exc))
