"""An unhandled error is one error line whose traceback has code locations only: no frame
locals, and no API key, token (past 4 characters), DSN password or S3 secret, in either log
format, for our own loggers and the libraries' (the standard library's `logging`).

Each case runs in a fresh interpreter (logging is process-wide state) configured exactly as
the API is, and forces an internal error whose frames hold every secret in local variables
and whose message carries them too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

API_KEY = "fcdn_" + "K" * 43
OPS_TOKEN = "fcops_" + "T" * 43
DB_PASSWORD = "pg-pass-4ef1c9"
REDIS_PASSWORD = "redis-pass-77aa"
S3_SECRET = "s3-secret-9b2d11"
BEARER = "Bearer " + API_KEY
SECRETS = (API_KEY, OPS_TOKEN, DB_PASSWORD, REDIS_PASSWORD, S3_SECRET, "K" * 12, "T" * 12)

SCRIPT = textwrap.dedent(
    f"""
    import logging
    from shared import logs
    from shared.settings import Settings
    from api.errors import as_domain_error

    settings = Settings(
        log_format=LOG_FORMAT,
        database_url="postgresql://filecdn:{DB_PASSWORD}@db.internal:5432/filecdn",
        redis_url="redis://filecdn:{REDIS_PASSWORD}@redis.internal:6379/0",
        s3_secret_key="{S3_SECRET}",
    )
    logs.configure(settings, "api")

    def authenticate(header, key, settings):
        dsn = settings.database_url
        secret = settings.s3_secret_key.get_secret_value()
        raise RuntimeError(f"boom with {{header}} at {{dsn}} and {{secret}} and {OPS_TOKEN}")

    try:
        authenticate("{BEARER}", "{API_KEY}", settings)
    except RuntimeError as exc:
        err = as_domain_error(exc)  # the API's one place: logs it, answers INTERNAL
        assert err.http_status == 500, err
        try:
            authenticate("{BEARER}", "{API_KEY}", settings)
        except RuntimeError:
            logging.getLogger("aiohttp.server").exception("Error handling request")
    """
)


def _run(log_format: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", f"LOG_FORMAT = {log_format!r}\n" + SCRIPT],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_an_internal_error_logs_code_locations_and_no_secret(log_format: str) -> None:
    out = _run(log_format)
    for secret in SECRETS:
        assert secret not in out, f"{secret!r} leaked:\n{out}"
    assert "authenticate" in out  # the frame is named: where it happened
    # Recognisable by their first 4 characters
    assert "Bearer fcdn_KKKK" in out and "fcops_TTTT" in out
    assert "[redacted]" in out
    if log_format == "json":
        lines = [json.loads(line) for line in out.splitlines()]
        assert [line["event"] for line in lines] == ["unhandled error", "Error handling request"]
        for line in lines:
            assert line["level"] == "error"
            for trace in line["exception"]:  # the error, and the one it happened during
                frames = trace["frames"]
                assert frames and all("locals" not in frame for frame in frames)
                assert frames[-1]["name"] == "authenticate" and frames[-1]["lineno"] > 0
    else:
        assert "unhandled error" in out and "Error handling request" in out
        assert out.count("Traceback (most recent call last)") == 3  # one chained
        assert "header =" not in out and "settings =" not in out  # no locals rendered


def test_a_request_aiohttp_cannot_parse_is_one_info_line() -> None:
    """A client's malformed bytes (here a NUL in a header) are the client's problem: aiohttp
    answers 400 and its error-with-traceback becomes one info line."""
    script = textwrap.dedent(
        """
        import logging
        from aiohttp.http_exceptions import BadHttpMessage
        from shared import logs
        from shared.settings import Settings

        logs.configure(Settings(log_format="json"), "api")
        try:
            raise BadHttpMessage("Invalid header value char")
        except BadHttpMessage as exc:
            logging.getLogger("aiohttp.server").exception(
                "Error handling request from %s", "127.0.0.1", exc_info=exc
            )
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    [line] = [json.loads(x) for x in done.stderr.splitlines()]
    assert (line["level"], line["event"]) == ("info", "malformed request")
    assert "exception" not in line and line["error"].startswith("BadHttpMessage")


def test_url_passwords_are_cut_where_urls_are_shown() -> None:
    from shared.logs import without_url_passwords

    shown = without_url_passwords("redis://app:s3cr3t-pw@cache:6379/0 and postgresql://u@db/x")
    assert "s3cr3t-pw" not in shown
    assert shown == "redis://app:[redacted]@cache:6379/0 and postgresql://u@db/x"
