"""The domain rules stay pure: importing them loads no database, Redis, HTTP or gRPC client,
and no adapter of ours (the way `test_edge.py` keeps the edge off the database layer)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

PURE = (
    "shared.actors",
    "shared.errors",
    "shared.filters",
    "shared.ids",
    "shared.pagination",
    "shared.rules",
    "shared.series",
    "shared.sniff",
)
CLIENTS = {"asyncpg", "redis", "aiohttp", "grpc", "arq", "minio"}


@functools.cache
def _loaded_after_importing(modules: tuple[str, ...]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_the_domain_rules_import_no_client_library() -> None:
    loaded = _loaded_after_importing(PURE)
    assert sorted({m.split(".")[0] for m in loaded} & CLIENTS) == []


def test_the_domain_rules_import_only_each_other() -> None:
    loaded = _loaded_after_importing(PURE)
    ours = {m for m in loaded if m.split(".")[0] in ("shared", "api", "worker", "cdn_edge", "cli")}
    assert ours <= {"shared", *PURE}, sorted(ours - {"shared", *PURE})


def test_the_check_sees_a_client_when_there_is_one() -> None:
    assert "redis" in _loaded_after_importing(("shared.token_cache",))
