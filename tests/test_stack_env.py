"""`filecdn run` writes DATA_DIR/stack.env: the running stack's settings, for another process
to join it with `set -a; . stack.env`. It holds credentials, so it is 0600 from creation."""

from __future__ import annotations

import stat
from pathlib import Path

from cli.stack import write_stack_env
from tests.helpers import run_sourcing


def _sourced(path: Path) -> dict[str, str]:
    out = run_sourcing(path, ["env", "-0"], check=True).stdout
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


def test_stack_env_sources_back_to_the_same_settings_and_nothing_else(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgresql://u:p@127.0.0.1:5432/db",
        "S3_SECRET_KEY": 'it\'s $secret `x` "y"',
        "EDGE_PORT": "8080",
        "HOME": "/root",  # not a setting: stays out
        "LD_PRELOAD": "/evil.so",
    }
    path = tmp_path / "stack.env"
    write_stack_env(path, env)
    sourced = _sourced(path)
    assert {k: sourced[k] for k in ("DATABASE_URL", "S3_SECRET_KEY", "EDGE_PORT")} == {
        k: env[k] for k in ("DATABASE_URL", "S3_SECRET_KEY", "EDGE_PORT")
    }
    assert "LD_PRELOAD" not in sourced and sourced.get("HOME") != "/root"


def test_stack_env_is_private_even_over_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    path.write_text("old")
    path.chmod(0o644)
    write_stack_env(path, {"REDIS_URL": "redis://:secret@127.0.0.1:6379/0"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "secret" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["stack.env"]  # no temp file left
