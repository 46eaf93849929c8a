"""Scan the logs of one whole `make test` run for tracebacks and secrets (`make scan-logs`).

The suite keeps every process's log (API, worker, edge, and the servers) in
`/tmp/filecdn-test-*/logs` and prints the directory at the end; without an argument the
newest run is scanned. Prints per file: lines, tracebacks (by event and exception type,
those a client's behaviour causes marked), and secret hits by kind; exits 1 when a client
caused a traceback or any secret was found.

Secrets looked for: the run's S3 secret key and pagination secret (read from its data
directory), any password inside a URL, Bearer credentials, API keys and operator tokens
past their first 4 characters, and public URL tokens (22 characters) in a path.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Exceptions a departing or misbehaving client causes: never worth a traceback.
CLIENT_EXCEPTIONS = {
    "CancelledError",
    "ConnectionResetError",
    "ClientConnectionResetError",
    "BrokenPipeError",
    "PayloadEncodingError",
    "ContentLengthError",
    "TransferEncodingError",
    "BadHttpMessage",
    "BadStatusLine",
    "LineTooLong",
    "InvalidArgument",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "CharacterNotInRepertoireError",
}
DEPENDENCY_LOGGERS = {"asyncpg", "redis", "urllib3", "minio", "arq"}
PATTERNS = {
    "url password": re.compile(
        r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@\"]*:(?!\[redacted\]@)[^@\s/\"]+@"
    ),
    "bearer credential": re.compile(r"Bearer\s+(?!fcdn_|fcops_)[A-Za-z0-9_.~+/=-]{5,}"),
    "api key": re.compile(r"fcdn_[A-Za-z0-9_-]{5,}"),
    "operator token": re.compile(r"fcops_[A-Za-z0-9_-]{5,}"),
    "public url token": re.compile(r"(?<![A-Za-z0-9_-])/[A-Za-z0-9_-]{22}/[^\s\"/]+"),
}


@dataclass
class FileScan:
    lines: int = 0
    tracebacks: Counter[tuple[str, str, bool]] = field(default_factory=Counter)
    secrets: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)


def _exception_types(entry: dict[str, Any]) -> list[str]:
    exc = entry.get("exception")
    if isinstance(exc, list):
        return [str(e.get("exc_type", "?")) for e in exc if isinstance(e, dict)]
    if isinstance(exc, str):
        last = exc.strip().splitlines()[-1] if exc.strip() else "?"
        return [last.split(":")[0].rsplit(".", 1)[-1]]
    return []


def scan_file(path: Path, secrets: dict[str, str]) -> FileScan:
    out = FileScan()
    text_traceback: list[str] | None = None
    for raw in path.read_text(errors="replace").splitlines():
        out.lines += 1
        for kind, value in secrets.items():
            if value and value in raw:
                out.secrets[kind] += 1
                out.samples.setdefault(kind, raw[:300])
        for kind, pattern in PATTERNS.items():
            if pattern.search(raw):
                out.secrets[kind] += 1
                out.samples.setdefault(kind, raw[:300])
        entry: dict[str, Any] | None = None
        if raw.startswith("{"):
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = None
        if entry is not None and "exception" in entry:
            types = _exception_types(entry)
            # A dependency's client library reporting its own connection trouble (a reset
            # from PostgreSQL is not a client of ours leaving).
            dependency = str(entry.get("logger", "")).split(".")[0] in DEPENDENCY_LOGGERS
            client = not dependency and any(t in CLIENT_EXCEPTIONS for t in types)
            out.tracebacks[(str(entry.get("event")), "/".join(types), client)] += 1
        elif raw.startswith("Traceback (most recent call last)"):
            text_traceback = []
        elif text_traceback is not None:
            if raw.startswith((" ", "\t")) or not raw:
                continue
            exc_type = raw.split(":")[0].rsplit(".", 1)[-1]
            if raw.startswith(("During handling", "The above exception")):
                continue
            out.tracebacks[("(plain text)", exc_type, exc_type in CLIENT_EXCEPTIONS)] += 1
            text_traceback = None
    return out


def newest_run() -> Path:
    runs = sorted(
        Path(tempfile.gettempdir()).glob("filecdn-test-*/logs"), key=lambda p: p.stat().st_mtime
    )
    if not runs:
        raise SystemExit("no $TMPDIR/filecdn-test-*/logs: run `make test` first, or name one")
    return runs[-1]


def run_secrets(run_dir: Path) -> dict[str, str]:
    found = {}
    for name, kind in (("s3-secret", "S3 secret key"), ("pagination-secret", "pagination secret")):
        path = run_dir / name
        if path.exists():
            found[kind] = path.read_text().strip()
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("logs", nargs="?", type=Path, help="a logs directory (default: newest run)")
    args = ap.parse_args()
    logs: Path = args.logs or newest_run()
    secrets = run_secrets(logs.parent)
    total_tb = Counter[tuple[str, str, bool]]()
    total_secrets = Counter[str]()
    print(f"logs: {logs} ({len(secrets)} configured secrets known)")
    print(f"{'file':34} {'lines':>8} {'tracebacks':>10} {'client':>7} {'secrets':>8}")
    samples: dict[str, str] = {}
    for path in sorted(logs.glob("*.log")):
        scan = scan_file(path, secrets)
        client = sum(n for (_, _, c), n in scan.tracebacks.items() if c)
        print(
            f"{path.name:34} {scan.lines:8} {sum(scan.tracebacks.values()):10} {client:7}"
            f" {sum(scan.secrets.values()):8}"
        )
        total_tb.update(
            {(f"{path.stem}: {e}", t, c): n for (e, t, c), n in scan.tracebacks.items()}
        )
        total_secrets.update(scan.secrets)
        for kind, sample in scan.samples.items():
            samples.setdefault(f"{path.name}: {kind}", sample)
    client_total = sum(n for (_, _, c), n in total_tb.items() if c)
    print(
        f"\ntotal: {sum(total_tb.values())} tracebacks, {client_total} caused by clients;"
        f" {sum(total_secrets.values())} secret hits"
    )
    for (event, types, client), n in total_tb.most_common():
        print(f"  {n:5} {'CLIENT ' if client else ''}{event} [{types}]")
    for kind, n in total_secrets.most_common():
        print(f"  secret: {kind}: {n}")
    for where, sample in samples.items():
        print(f"  sample {where}: {sample}")
    return 1 if client_total or total_secrets else 0


if __name__ == "__main__":
    sys.exit(main())
