"""The list filter language on a real PostgreSQL: the compiled fragments are valid SQL and
select the right rows (the suite's own server; FILTER_TEST_DSN names another)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from shared.filters import compile_filter
from tests.conftest import Stack

DSN = os.environ.get("FILTER_TEST_DSN")
T = datetime(2026, 3, 15, tzinfo=UTC)

# id, filename, bytes, content_type, created_at, expires_at, url token, url expires_at
ROWS = [
    ("a", "Quarterly Report.pdf", 2_000_000, "application/pdf", T - timedelta(days=5), None,
     "tokA", T + timedelta(days=17)),
    ("b", "photo.png", 500, "image/png", T + timedelta(days=1), T + timedelta(days=47),
     "tokB", None),
    ("c", "notes.txt", 1_048_576, "text/plain", T + timedelta(days=5), None, None, None),
    ("d", "report-final.PNG", 3_000_000, "image/png", T - timedelta(days=1),
     T + timedelta(days=15), None, None),
]  # fmt: skip

CASES = [
    ("", "abcd"),
    ("public_url != null", "ab"),
    ("public_url = null", "cd"),
    ("size_bytes > 1048576", "ad"),
    ("size_bytes >= 1048576", "acd"),
    ('content_type = "image/png" AND created_at > "2026-03-15T00:00:00Z"', "b"),
    ('name:"report"', "ad"),
    ('file_name:"REPORT"', "ad"),
    ('NOT name:"report"', "bc"),
    ('-name:"report"', "bc"),
    ('name = "photo.png"', "b"),
    ('name = "PHOTO.PNG"', ""),
    ('content_type:"PNG"', "bd"),
    ('file_id = "c"', "c"),
    ("expires_at = null", "ac"),
    ('expires_at < "2026-04-15"', "d"),
    # Files that never expire are "not expiring before", so NOT keeps them.
    ('NOT expires_at < "2026-04-15"', "abc"),
    ('public_url_expires_at < "2026-06-01T00:00:00Z"', "a"),
    ('NOT public_url_expires_at < "2026-06-01T00:00:00Z"', "bcd"),
    ("public_url_expires_at = null", "bcd"),
    ('public_url = "https://cdn.example/tokB/b.png"', "b"),
    ('public_url != "https://cdn.example/tokB/b.png"', "a"),
    ('public_url = "garbage"', ""),
    ('public_url != "garbage"', "ab"),
    ("created_at > 1773532800", "bc"),
    ('created_at <= "2026-03-15T04:00:00+05:00"', "ad"),
    # OR binds tighter: (small OR pdf) AND old = {a}; AND-first would also give b.
    ('size_bytes < 1000 OR content_type:"pdf" AND created_at < "2026-03-15"', "a"),
    ('(size_bytes < 1000 OR content_type:"pdf") created_at < "2026-03-15"', "a"),
    ('upload_status = "Complete" file_id != "c"', "abd"),
    ('upload_status != "complete"', ""),
    ('user_defined_id = null AND (file_id = "a" OR file_id = "c")', "ac"),
    ('user_defined_id = "x"', ""),
    ('name = "x\'; DROP TABLE f; --"', ""),
]


async def _matching_ids(dsn: str, filters: list[str]) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TEMP TABLE f (id text PRIMARY KEY, filename text NOT NULL,"
            " bytes bigint NOT NULL, content_type text NOT NULL,"
            " created_at timestamptz NOT NULL, expires_at timestamptz);"
            "CREATE TEMP TABLE u (file_id text NOT NULL, token text NOT NULL,"
            " expires_at timestamptz)"
        )
        await conn.executemany(
            "INSERT INTO f VALUES ($1, $2, $3, $4, $5, $6)", [r[:6] for r in ROWS]
        )
        await conn.executemany(
            "INSERT INTO u VALUES ($1, $2, $3)", [(r[0], r[6], r[7]) for r in ROWS if r[6]]
        )
        found = []
        for text in filters:
            where, values = compile_filter(text, first_param=2)
            rows = await conn.fetch(
                "SELECT f.id FROM f LEFT JOIN u ON u.file_id = f.id"
                f" WHERE f.id <> $1 AND ({where}) ORDER BY f.id",
                "none",
                *values,
            )
            found.append("".join(r["id"] for r in rows))
        return found
    finally:
        await conn.close()


async def test_compiled_filters_select_the_right_rows_on_postgresql(stack: Stack) -> None:
    """On the suite's own PostgreSQL (FILTER_TEST_DSN overrides it)."""
    dsn = DSN or stack.env["DATABASE_URL"]
    found = await _matching_ids(dsn, [text for text, _ in CASES])
    wrong = [
        f"{text!r}: expected {want!r}, got {got!r}"
        for (text, want), got in zip(CASES, found, strict=True)
        if got != want
    ]
    assert not wrong, "\n".join(wrong)
