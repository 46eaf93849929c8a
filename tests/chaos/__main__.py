"""`python -m tests.chaos` (`make chaos`): start a private stack, load it, break and restore
each part in turn, settle, check the invariants, print the figures. Exit status 1 when an
invariant fails or a part does not recover.

Options: --ports 24000-24999 (take every port from this range; default: free ones),
--down SECONDS (how long each fault lasts), --settle SECONDS (load between faults),
--seed N, --markdown (tables for the README), --keep (keep the data directory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from cli.embedded import Supervisor
from shared import ops_state, teams
from shared.resources import open_resources
from shared.settings import Settings
from tests.chaos import checks, faults, report
from tests.chaos.history import History, now
from tests.chaos.load import MAGIC, Load, TeamKey, read_back
from tests.chaos.stack import ChaosStack, Ports, drop_data, start

TEAMS = ("alpha", "beta", "gamma")
QUOTA = 8  # small: the load meets it often
SETTLE_LIMIT = 120.0  # seconds to wait for the final reconcile pass and lost deletions


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--ports", help="FIRST-LAST: take every port from this range")
    p.add_argument("--down", type=float, default=6.0, help="seconds each fault lasts")
    p.add_argument("--settle", type=float, default=2.0, help="seconds of load between faults")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before faults")
    p.add_argument("--seed", type=int, default=9)
    p.add_argument("--only", help="comma-separated targets (default: all, both signals)")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--keep", action="store_true", help="keep the data directory")
    return p.parse_args(argv)


async def _setup(stack: ChaosStack) -> tuple[list[TeamKey], dict[str, int], faults.Probe]:
    """The load's teams and the probe's file and URL."""
    settings = Settings.from_env(stack.env)
    async with open_resources(settings) as res:
        keys, ids = [], {}
        for name in (*TEAMS, "probe"):
            team = await teams.create_team(res.db, name)
            ids[name] = team.id
            keys.append(TeamKey(name, await teams.create_key(res.db, name)))
    probe_key = keys.pop().key
    data = MAGIC["png"] + bytes(range(256)) * 16
    headers = {"Authorization": f"Bearer {probe_key}"}
    async with aiohttp.ClientSession(base_url=stack.api_url, headers=headers) as api:
        form = aiohttp.FormData()
        form.add_field("file", data, filename="probe.png")
        async with api.post("/v1/files", data=form) as r:
            file_id = (await r.json())["id"]
        async with api.post(f"/v1/files/{file_id}/public-url", json={}) as r:
            url = (await r.json())["public_url"]
    probe = faults.Probe(stack.api_url, probe_key, file_id, data, url, stack.env["DATABASE_URL"])
    ids.pop("probe")
    return keys, ids, probe


async def _settled(stack: ChaosStack, quiet: float) -> str | None:
    """Wait for a reconcile pass (with its orphan sweep) that began after every orphan the
    run could have made was past the sweep's grace, and for deletions whose events were
    lost (finished a minute after the delete) to be done. None, or what never happened."""
    settings = Settings.from_env(stack.env)
    grace = settings.sweep_grace_seconds
    deadline = time.monotonic() + SETTLE_LIMIT
    async with open_resources(settings) as res:
        while time.monotonic() < deadline:
            last = await ops_state.last_reconcile(res.redis)
            swept = (
                last is not None
                and last["ok"]
                and last["at"] - last["seconds"] >= quiet + grace + 0.5
                and "objects_swept" in last["fixed"]
            )
            pending = await res.db.fetchval(
                """SELECT count(*) FROM files
                    WHERE deleted_at IS NOT NULL AND object_deleted_at IS NULL"""
            )
            if swept and pending == 0:
                return None
            await asyncio.sleep(0.5)
        return f"no settled reconcile pass within {SETTLE_LIMIT:.0f}s (pending deletions)"


async def run(stack: ChaosStack, args: argparse.Namespace) -> int:
    keys, team_ids, probe = await _setup(stack)
    h = History()
    load = Load(h, stack.api_url, stack.grpc_target, keys, args.seed)
    stop = asyncio.Event()
    began = now()
    load_task = asyncio.create_task(load.run(stop))
    plan = faults.DEFAULT_PLAN
    if args.only:
        wanted = set(args.only.split(","))
        plan = [(t, s) for t, s in plan if t in wanted]
    done: list[faults.Fault] = []
    exits: list[str] = []
    try:
        await asyncio.sleep(args.warmup)
        for target, sig in plan:
            fault = faults.Fault(target, sig)
            print(f"[{now() - began:6.1f}s] {fault.name}", file=sys.stderr, flush=True)
            await faults.run_fault(stack, fault, probe, args.down, args.settle)
            done.append(fault)
            if fault.target == "redis-empty":  # live URLs 404 until the rebuild
                h.blackouts.append((fault.started, fault.recovered or float("inf")))
            print(
                f"[{now() - began:6.1f}s]   recovered in {fault.recovery}",
                file=sys.stderr,
                flush=True,
            )
            for gone in stack.exited():  # a part that died of another's fault
                exits.append(f"{gone} exited during {fault.name}")
                print(f"[{now() - began:6.1f}s]   {exits[-1]}", file=sys.stderr, flush=True)
                await asyncio.to_thread(stack.revive, gone)
    finally:
        stack.thaw_all()
        stop.set()
        await load_task
    end = now()
    verdict = checks.Verdict()
    for f in done:
        if f.recovered is None:
            verdict.fail("every part recovers", f"{f.name}: not within {faults.RECOVERY_LIMIT}s")
    verdict.held("every part recovers")
    for what in exits:
        verdict.fail("no process exits because another failed", what)
    verdict.held("no process exits because another failed")
    sessions = {
        k.name: aiohttp.ClientSession(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {k.key}"}
        )
        for k in keys
    }
    try:
        for f in h.files.values():  # settle what unknown outcomes did
            if f.url_unknown or f.delete_unknown:
                await read_back(h, f, sessions[f.team])
        print(f"[{now() - began:6.1f}s] load stopped; settling", file=sys.stderr, flush=True)
        late = await _settled(stack, end)
        if late:
            verdict.fail("a reconcile pass settles everything", late)
        verdict.held("a reconcile pass settles everything")
        print(f"[{now() - began:6.1f}s] checking", file=sys.stderr, flush=True)
        checks.check_reads(h, verdict)
        if load.bad_bytes:
            verdict.fail("downloads during the run byte-exact", "; ".join(load.bad_bytes[:3]))
        await checks.check_uploads(h, sessions, verdict)
        async with open_resources(Settings.from_env(stack.env)) as res:
            await checks.check_state(res, h, team_ids, verdict)
            name = TEAMS[0]
            await checks.check_quota_fill(sessions[name], res, name, team_ids[name], verdict)
    finally:
        for s in sessions.values():
            await s.close()
    print(f"[{now() - began:6.1f}s] done", file=sys.stderr, flush=True)
    print(report.render(h, done, end, verdict, markdown=args.markdown))
    print(
        json.dumps(
            {
                "requests": len(h.requests),
                "faults": len(done),
                "recovery_s": {f.name: f.recovery for f in done},
                "seconds": round(now() - began, 1),
                "ok": verdict.ok,
            }
        )
    )
    return 0 if verdict.ok else 1


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    span = None
    if args.ports:
        first, last = (int(p) for p in args.ports.split("-"))
        span = (first, last)
    data_dir = Path(tempfile.mkdtemp(prefix="filecdn-chaos-"))
    sup = Supervisor(data_dir / "logs")
    stack: ChaosStack | None = None
    # SIGTERM (a CI timeout) stops the stack like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.monotonic()
    try:
        stack = start(data_dir, sup, Ports(span), QUOTA)
        print(f"stack up in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
        return asyncio.run(run(stack, args))
    finally:
        if stack is not None:
            stack.close()
        else:
            sup.close()
        if not args.keep:
            drop_data(data_dir)
        print(f"chaos logs: {data_dir / 'logs'}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
