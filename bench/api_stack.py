"""The embedded servers and one `filecdn api` process, for the bench scripts that measure the
API (run as `python bench/x.py`, which puts this directory first on the import path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cli.embedded import Supervisor, free_port, tcp_open, wait_until
from cli.stack import filecdn_argv, stack_environment
from shared import db
from shared.settings import Settings


@dataclass(frozen=True)
class ApiStack:
    work: Path  # a temporary directory of the bench's own (data, logs, its files)
    sup: Supervisor  # its children: PostgreSQL, Valkey, SeaweedFS ("seaweedfs"), the API
    port: int
    proc: subprocess.Popen[bytes]  # the API process
    settings: Settings  # the API's, as its environment gives them

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def api_stack(prefix: str, **env: str) -> Iterator[ApiStack]:
    """Start everything (migrated, the API listening, `env` over its settings); stop it all
    on the way out."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    sup = Supervisor(work / "logs")
    try:
        full = stack_environment(sup, work / "data", dict(os.environ), test_mode=True)
        port = free_port()
        full.update(API_PORT=str(port), GRPC_PORT=str(free_port()), OPS_PORT=str(free_port()))
        full.update(LOG_LEVEL="warning", **env)
        asyncio.run(db.migrate(full["DATABASE_URL"]))
        proc = sup.start("api", filecdn_argv("api"), env=full)
        wait_until(lambda: tcp_open("127.0.0.1", port), 60, "API")
        yield ApiStack(work, sup, port, proc, Settings.from_env(full))
    finally:
        sup.close()
