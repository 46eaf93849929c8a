"""What the API answers while a dependency fails, and how long it takes: the README's table
(`make bench-outages`).

Embedded PostgreSQL, Valkey and SeaweedFS; one API process with the default settings
reaching each through a proxy (`tests/faults.py`) that refuses (nothing listens, open
connections reset) or hangs (connections accepted and kept, nothing forwarded). For each
row: break one link, send one REST request and one gRPC call that need that dependency,
time the answers, restore the link and wait for the API to answer normally again.
`--runs N` repeats every row and prints the median time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.faults, from anywhere

from cli.embedded import Supervisor, free_port
from cli.stack import filecdn_argv, stack_environment
from shared import db, teams
from shared.resources import open_resources
from shared.settings import Settings
from tests.faults import SCENARIOS, Outcome, during_outage, faulty_links, table, tcp_ready


async def bench(sup: Supervisor, env: dict[str, str], runs: int) -> None:
    async with open_resources(Settings.from_env(env)) as res:
        team = await teams.create_team(res.db, f"bench-outages-{os.getpid()}")
        key = await teams.create_key(res.db, team.name)
    async with faulty_links(env) as (through, links):
        api_port, grpc_port = free_port(), free_port()
        api_env = {
            **through,
            "API_PORT": str(api_port),
            "GRPC_PORT": str(grpc_port),
            "OPS_PORT": str(free_port()),
        }
        sup.start("api", filecdn_argv("api"), env=api_env)
        await tcp_ready(api_port)
        await tcp_ready(grpc_port)
        api_url = f"http://127.0.0.1:{api_port}"
        form = aiohttp.FormData()
        form.add_field("file", b"\x89PNG\r\n\x1a\n" + bytes(4096), filename="a.png")
        form.add_field("purpose", "assistants")
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{api_url}/v1/files", data=form, headers={"Authorization": f"Bearer {key}"}
            ) as r,
        ):
            file_id = (await r.json())["id"]
        outcomes: list[Outcome] = []
        for label, dependency, mode in SCENARIOS:
            tries = [
                await during_outage(
                    links,
                    label,
                    dependency,
                    mode,
                    api_url=api_url,
                    grpc_target=f"localhost:{grpc_port}",
                    key=key,
                    file_id=file_id,
                )
                for _ in range(runs)
            ]
            first = tries[0]
            first.rest.seconds = statistics.median(t.rest.seconds for t in tries)
            first.grpc.seconds = statistics.median(t.grpc.seconds for t in tries)
            outcomes.append(first)
            print(
                f"{label}: REST {first.rest.status} {first.rest.seconds:.2f}s, "
                f"gRPC {first.grpc.code} {first.grpc.seconds:.2f}s",
                file=sys.stderr,
            )
    defaults = Settings()
    print(
        f"\nDefaults: DB_TIMEOUT={defaults.db_timeout:g},"
        f" DB_CONNECT_TIMEOUT={defaults.db_connect_timeout:g},"
        f" REDIS_TIMEOUT={defaults.redis_timeout:g},"
        f" S3_CONNECT_TIMEOUT={defaults.s3_connect_timeout:g},"
        f" S3_READ_TIMEOUT={defaults.s3_read_timeout:g}; median of {runs}\n"
    )
    print(table(outcomes))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="filecdn-bench-outages-"))
    sup = Supervisor(work / "logs")
    try:
        env = stack_environment(sup, work / "data", dict(os.environ), test_mode=True)
        env["LOG_FORMAT"] = "json"
        asyncio.run(db.migrate(env["DATABASE_URL"]))
        asyncio.run(bench(sup, env, args.runs))
    finally:
        sup.close()
        print(f"\nlogs: {work / 'logs'}", file=sys.stderr)


if __name__ == "__main__":
    main()
