"""`filecdn run` (what `make run` starts): the whole stack from nothing, the README's curl
walk-through against it, Ctrl-C leaving no process behind, and data surviving a restart."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cli.embedded import free_port, wait_until
from tests.helpers import run_sourcing

ROOT = Path(__file__).resolve().parent.parent


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- walkthrough:start -->")[1].split("<!-- walkthrough:end -->")[0]
    return block.split("```sh\n", 1)[1].rsplit("```", 1)[0]


class RunningStack:
    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.log = data_dir.parent / f"run-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "run"],
            env=env,
            cwd=ROOT,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.api = f"http://127.0.0.1:{env['API_PORT']}"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"filecdn run exited:\n{self.log.read_text()}")
            if "filecdn is running" in self.log.read_text():
                return
            time.sleep(0.3)
        raise AssertionError(f"filecdn run not ready:\n{self.log.read_text()}")

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def interrupt(self) -> list[psutil.Process]:
        """Ctrl-C, as a terminal sends it; returns the processes that were running."""
        before = self.descendants()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        return before


@pytest.fixture
def run_env() -> Iterator[tuple[Path, dict[str, str]]]:
    work = Path(tempfile.mkdtemp(prefix="filecdn-run-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "S3_ENDPOINT", "PAGINATION_SECRET")
    }
    env.update(
        DATA_DIR=str(work / "data"),
        API_PORT=str(free_port()),
        GRPC_PORT=str(free_port()),
        EDGE_PORT=str(free_port()),
        EDGE_OPS_PORT=str(free_port()),
        OPS_PORT=str(free_port()),
        WORKER_OPS_PORT=str(free_port()),
        LOG_FORMAT="json",
    )
    yield work, env


def test_run_serves_the_readme_walkthrough_and_ctrl_c_leaves_nothing(
    run_env: tuple[Path, dict[str, str]],
) -> None:
    work, env = run_env
    stack = RunningStack(Path(env["DATA_DIR"]), env)
    try:
        stack.wait_ready()
        banner = stack.log.read_text()
        key = (Path(env["DATA_DIR"]) / "demo-api-key").read_text().strip()
        assert key in banner and stack.api in banner
        script = (
            walkthrough()
            .replace("http://127.0.0.1:8000", stack.api)
            .replace(".filecdn/demo-api-key", str(Path(env["DATA_DIR"]) / "demo-api-key"))
        )
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        # The revoked URL's status, printed by the last curl before the delete.
        assert re.search(r'"revoked": ?true[^\n]*\}404$', done.stdout, re.M), done.stdout
        assert '"deleted": true' in done.stdout.replace('"deleted":true', '"deleted": true')
    finally:
        running = stack.interrupt() if stack.proc.poll() is None else []
    assert stack.proc.returncode == 0, stack.log.read_text()
    assert len(running) >= 6  # postgres, valkey, weed, api, worker, edge (+ their children)

    def alive() -> list[psutil.Process]:
        found = []
        for p in running:
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
        return found

    with contextlib.suppress(TimeoutError):  # reaping may lag the parent's exit a little
        wait_until(lambda: not alive(), 5, "every child to exit")
    assert not alive(), [p.cmdline() for p in alive()]


def test_run_keeps_data_and_key_across_restarts(run_env: tuple[Path, dict[str, str]]) -> None:
    _, env = run_env
    first = RunningStack(Path(env["DATA_DIR"]), env)
    try:
        first.wait_ready()
        key = (Path(env["DATA_DIR"]) / "demo-api-key").read_text().strip()
        file_id = _upload(first.api, key)
        _joins_with_stack_env(Path(env["DATA_DIR"]) / "stack.env")
        ops_token = _dashboard_opens_with_the_ops_token(first, env)
    finally:
        first.interrupt()
    assert not (Path(env["DATA_DIR"]) / "stack.env").exists()  # it described a running stack
    second = RunningStack(Path(env["DATA_DIR"]), env)
    try:
        second.wait_ready()
        assert (Path(env["DATA_DIR"]) / "demo-api-key").read_text().strip() == key
        assert "(new)" not in second.log.read_text()
        assert _dashboard_opens_with_the_ops_token(second, env) == ops_token  # still valid: kept
        req = urllib.request.Request(
            f"{second.api}/v1/files/{file_id}/content", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.read() == b"survives a restart"
    finally:
        second.interrupt()


def _dashboard_opens_with_the_ops_token(stack: RunningStack, env: dict[str, str]) -> str:
    """DATA_DIR/ops-token is private from creation, the banner links the dashboard with it
    in the URL fragment, and it opens the ops listener's JSON (127.0.0.1:OPS_PORT)."""
    path = Path(env["DATA_DIR"]) / "ops-token"
    assert path.stat().st_mode & 0o777 == 0o600
    token = path.read_text().strip()
    ops = f"http://127.0.0.1:{env['OPS_PORT']}"
    assert f"{ops}/#token={token}" in stack.log.read_text()
    req = urllib.request.Request(
        f"{ops}/api/summary?minutes=5", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert isinstance(json.loads(r.read())["edge"]["requests"], int)
    with urllib.request.urlopen(f"http://127.0.0.1:{env['WORKER_OPS_PORT']}/healthz") as r:
        assert json.loads(r.read())["status"] == "ok"
    return token


def _joins_with_stack_env(stack_env: Path) -> None:
    """A process given only stack.env reaches the stack's database (and is told it is current),
    and another edge joins as the README says (`set -a; . stack.env; EDGE_PORT=...
    EDGE_OPS_PORT=... filecdn edge`): ready once it reaches the stack's Redis."""
    assert stack_env.stat().st_mode & 0o777 == 0o600
    joined = run_sourcing(stack_env, [sys.executable, "-m", "cli", "migrate"], cwd=ROOT, timeout=60)
    assert joined.returncode == 0 and "schema up to date" in joined.stdout, joined.stderr
    port, ops_port = free_port(), free_port()
    script = 'set -a; . "$0"; EDGE_PORT=$1 EDGE_OPS_PORT=$2 exec "$3" -m cli edge'
    edge = subprocess.Popen(
        ["sh", "-c", script, str(stack_env), str(port), str(ops_port), sys.executable],
        env={"PATH": os.environ["PATH"]},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def ready() -> bool:
            assert edge.poll() is None, edge.stderr.read().decode() if edge.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/readyz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(ready, 60, "the joined edge to be ready")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        edge.send_signal(signal.SIGINT)
        edge.communicate(timeout=30)
    assert edge.returncode == 0


def _upload(api: str, key: str) -> str:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.txt"'
        f"\r\n\r\nsurvives a restart\r\n--{boundary}--\r\n"
    ).encode()
    req = urllib.request.Request(
        f"{api}/v1/files",
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        m = re.search(rb'"id": ?"(file_[^"]+)"', r.read())
    assert m
    return m.group(1).decode()
