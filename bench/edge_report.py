"""Helpers for bench/edge.sh (standard library only).

  edge_report.py files DIR             write DIR/small.png (10 KiB) and DIR/large.mp4 (10 MiB)
                                       exactly as /work/shared/bench/peers.sh generates them
  edge_report.py ports N               N distinct free loopback ports in 10000..19999
  edge_report.py field KEY             print JSON field KEY of the object on stdin
  edge_report.py stack-env PID LOG DIR the environment `filecdn run` (PID) gave its edge, as
                                       NUL-separated KEY=VALUE (see stack_env)
  edge_report.py costs ROUNDS SECONDS CONNS NAME=URL...
                                       interleaved wrk rounds over the named small-object
                                       URLs (A B C A B C ...): median req/s of each, and the
                                       median per-round cost of the first against each other
  edge_report.py verdict FILE [--edge NAME] [--nometrics NAME] [--nolinkstats NAME]
                              [--bare NAME] [--lookup NAME]
                                       the issue's verdict table, in markdown, from the table
                                       peers.sh printed into FILE, and the ceiling table when
                                       FILE has aiohttp alone and with the lookup (--bare,
                                       --lookup: default aiohttp_bare, aiohttp_lookup)

`verdict` takes other target names so the report can be checked on any peers.sh output,
e.g. `--edge nginx-cache --nometrics nginx-disk` on a run without an edge target.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import socket
import statistics
import subprocess
import sys
from pathlib import Path

# peers.sh's table: "target small_rps small_p99 large_MBps range_rps", one row per target.
COLUMNS = ("small_rps", "small_p99", "large_MBps", "range_rps")


def write_files(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "small.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(10 * 1024 - 8))
    (d / "large.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(10 * 1024 * 1024 - 12))


def free_ports(n: int) -> list[int]:
    """Ports below 20000: the stack's SeaweedFS and peers.sh pick theirs in 20000..65535 (a
    port and port+10000) *before* our API and edges bind, so they could take one of ours."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            p = random.randint(10000, 19999)
            if p in ports:
                continue
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                s.close()
                continue
            held.append(s)
            ports.append(p)
    finally:
        for s in held:
            s.close()
    return ports


def _children(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(") ", 1)[1].split()[1]) == ppid:
            out.append(int(entry.name))
    return out


def stack_env(run_pid: int, log: Path, data_dir: Path) -> dict[str, str]:
    """The environment of the edge `filecdn run` started: every variable stack_environment
    added (REDIS_URL, S3_*, DATABASE_URL, PAGINATION_SECRET, and whatever it adds later).

    Read from /proc/<edge>/environ (the process is ours). Fallback where /proc is not
    readable: the URLs the banner printed plus the secrets `filecdn run` keeps in DATA_DIR.
    """
    for pid in _children(run_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            if argv[1:4] != [b"-m", b"cli", b"edge"]:  # cli.stack.filecdn_argv("edge")
                continue
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        env = dict(kv.split("=", 1) for kv in raw.decode().split("\0") if "=" in kv)
        if env.get("REDIS_URL") and env.get("S3_ENDPOINT"):
            return env
    # Fallback: the banner (rich panel; "│ Redis      redis://… │").
    text = log.read_text(errors="replace")
    env = dict(os.environ)

    def banner(label: str, scheme: str) -> str:
        m = re.search(rf"^\W*{label}\s+({scheme}\S+)", text, re.MULTILINE)
        if not m:
            raise SystemExit(f"edge_report: no '{label}' line in {log}")
        return m.group(1)

    env["DATABASE_URL"] = banner("PostgreSQL", "postgres")
    env["REDIS_URL"] = banner("Redis", "redis")
    env["S3_ENDPOINT"] = banner("S3", "http")
    m = re.search(r"^\W*S3\s+\S+\s+bucket\s+(\S+)", text, re.MULTILINE)
    if m:
        env["S3_BUCKET"] = m.group(1)
    if "S3_SECRET_KEY" not in env and (data_dir / "s3-secret").exists():
        env["S3_SECRET_KEY"] = (data_dir / "s3-secret").read_text().strip()
    if "PAGINATION_SECRET" not in env and (data_dir / "pagination-secret").exists():
        env["PAGINATION_SECRET"] = (data_dir / "pagination-secret").read_text().strip()
    return env


def parse_table(text: str) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    in_table = False
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["target"] and tuple(parts[1:]) == COLUMNS:
            in_table = True
            continue
        if in_table:
            if len(parts) != 5:
                in_table = False
                continue
            try:
                rows[parts[0]] = dict(zip(COLUMNS, map(float, parts[1:]), strict=True))
            except ValueError:
                in_table = False
    return rows


def _fmt(v: float, unit: str, digits: int = 0) -> str:
    sep = "" if unit in ("x", "%") else " "
    return "n/a" if math.isnan(v) else f"{v:,.{digits}f}{sep}{unit}".strip()


def verdict(
    rows: dict[str, dict[str, float]], edge: str, nometrics: str, nolinkstats: str
) -> list[str]:
    need = [edge, nometrics, nolinkstats, "nginx-link", "nginx-cache", "origin"]
    missing = [n for n in need if n not in rows]
    if missing:
        raise SystemExit(f"edge_report: peers.sh table lacks {', '.join(missing)}")
    e, nm, nl = rows[edge], rows[nometrics], rows[nolinkstats]
    link, cache, origin = rows["nginx-link"], rows["nginx-cache"], rows["origin"]

    def ratio(a: float, b: float) -> float:
        return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan

    def result(ok: bool, v: float) -> str:
        return "n/a" if math.isnan(v) else ("PASS" if ok else "MISS")

    lines = [
        "| Check | Edge | Peer | Ratio | Target | Verdict |",
        "|---|---:|---:|---:|---|---|",
    ]

    def row(
        check: str, a: float, b: float, unit: str, target: str, ok: bool, digits: int = 0
    ) -> None:
        r = ratio(a, b)
        lines.append(
            f"| {check} | {_fmt(a, unit, digits)} | {_fmt(b, unit, digits)} | {_fmt(r, 'x', 2)} "
            f"| {target} | {result(ok, r)} |"
        )

    # Issue 12's must-show: against nginx serving its own cache (no revocation at all).
    r = ratio(e["small_rps"], cache["small_rps"])
    row(
        "Small (10 KiB) req/s vs nginx proxy_cache",
        e["small_rps"],
        cache["small_rps"],
        "",
        "≥ 0.5x",
        r >= 0.5,
    )
    row(
        "Small p99 latency vs nginx secure_link",
        e["small_p99"],
        link["small_p99"],
        "ms",
        "≤ 1.0x (edge ≤ peer)",
        e["small_p99"] <= link["small_p99"],
        1,
    )
    r = ratio(e["range_rps"], cache["range_rps"])
    row(
        "64 KiB Range req/s vs nginx proxy_cache",
        e["range_rps"],
        cache["range_rps"],
        "",
        "≥ 0.5x",
        r >= 0.5,
    )
    r = ratio(e["large_MBps"], cache["large_MBps"])
    row(
        "Large (10 MiB) MB/s vs nginx proxy_cache",
        e["large_MBps"],
        cache["large_MBps"],
        "MB/s",
        "≥ 1.5x",
        r >= 1.5,
    )
    # Issue 5's, still held.
    r = ratio(e["small_rps"], link["small_rps"])
    row(
        "Small (10 KiB) req/s vs nginx secure_link",
        e["small_rps"],
        link["small_rps"],
        "",
        "≥ 2.0x",
        r >= 2.0,
    )
    r = ratio(e["range_rps"], origin["range_rps"])
    row(
        "64 KiB Range req/s vs S3 origin",
        e["range_rps"],
        origin["range_rps"],
        "",
        "≥ 1.0x",
        r >= 1.0,
    )
    cost = 1 - ratio(e["small_rps"], nm["small_rps"])
    lines.append(
        f"| Metrics cost: 1 - small req/s ÷ same edge with EDGE_METRICS=false "
        f"| {_fmt(e['small_rps'], '')} | {_fmt(nm['small_rps'], '')} "
        f"| {_fmt(cost * 100, '%', 1)} | < 5% (noisy) | {result(cost < 0.05, cost)} |"
    )
    cost = 1 - ratio(e["small_rps"], nl["small_rps"])
    lines.append(
        f"| link stats cost (1 \u2212 on ÷ off), small req/s (EDGE_LINK_STATS=false as off) "
        f"| {_fmt(e['small_rps'], '')} | {_fmt(nl['small_rps'], '')} "
        f"| {_fmt(cost * 100, '%', 1)} | < 5% (noisy) | {result(cost < 0.05, cost)} |"
    )
    return lines


def ceiling(rows: dict[str, dict[str, float]], edge: str, bare: str, lookup: str) -> list[str]:
    """The throughput targets beside aiohttp alone (`bare`) and aiohttp plus the edge's token
    lookup (`lookup`): what no edge on aiohttp, or on aiohttp and redis-py, can exceed.

    The issue's rule: where aiohttp itself is the ceiling below a target, say so with the
    figures. A target above what aiohttp serves with nothing to do, or with nothing to do but
    the one Redis lookup per request that fail-closed revocation needs, is out of reach here
    for any handler they run; the edge's share of that floor is what the rest of its work costs.
    """
    if any(name not in rows for name in (edge, bare, lookup, "nginx-cache")):
        return []
    e, b, k, cache = rows[edge], rows[bare], rows[lookup], rows["nginx-cache"]
    lines = [
        "| figure | nginx-cache | target | aiohttp alone | aiohttp + lookup | edge "
        "| aiohttp alone ÷ nginx-cache | aiohttp + lookup ÷ nginx-cache "
        "| edge ÷ aiohttp + lookup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    beyond_bare, beyond_lookup = [], []
    for label, col, factor in (
        ("10 KiB req/s", "small_rps", 0.5),
        ("64 KiB range req/s", "range_rps", 0.5),
        ("10 MiB MB/s", "large_MBps", 1.5),
    ):
        target = factor * cache[col]
        lines.append(
            f"| {label} | {_fmt(cache[col], '')} | {_fmt(target, '')} ({factor}x) "
            f"| {_fmt(b[col], '')} | {_fmt(k[col], '')} | {_fmt(e[col], '')} "
            f"| {_fmt(b[col] / cache[col], 'x', 2)} | {_fmt(k[col] / cache[col], 'x', 2)} "
            f"| {_fmt(e[col] / k[col], 'x', 2)} |"
        )
        if target >= b[col]:
            beyond_bare.append(label)
        elif target >= k[col]:
            beyond_lookup.append(label)
    lines.append("")
    if beyond_bare:
        lines.append(
            f"At or above what aiohttp alone serves: {', '.join(beyond_bare)} "
            "(aiohttp itself is the ceiling below the target here)."
        )
    if beyond_lookup:
        lines.append(
            f"Above what aiohttp serves with only the token lookup to do: "
            f"{', '.join(beyond_lookup)} (aiohttp and redis-py, one round trip per request, "
            "are the ceiling below the target here)."
        )
    if not beyond_bare and not beyond_lookup:
        lines.append(
            "Every target is below what aiohttp serves with only the lookup to do: the rest "
            "of the edge's work per request decides them."
        )
    return lines


def wrk_rps(url: str, seconds: int, conns: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None or "Non-2xx" in out:
        raise SystemExit(f"edge_report: wrk on {url} failed:\n{out}")
    return float(m.group(1))


def costs(rounds: int, seconds: int, conns: int, targets: list[tuple[str, str]]) -> list[str]:
    """What a switch costs, measured so that the machine's drift cancels out: the targets
    take turns (one wrk figure each per round, the order rotating every round), and each
    round's cost is computed within the round, then the median over rounds is taken."""
    got: dict[str, list[float]] = {name: [] for name, _ in targets}
    for r in range(rounds):
        turn = targets[r % len(targets) :] + targets[: r % len(targets)]
        for name, url in turn:
            got[name].append(wrk_rps(url, seconds, conns))
    base = targets[0][0]
    lines = [
        f"Interleaved, {rounds} rounds x {seconds} s per figure, wrk 1 thread x {conns} "
        "connections, small object:",
        "",
        "| Edge | median req/s | cost of the first (1 - first / this), median of rounds | < 5% |",
        "|---|---:|---:|---|",
    ]
    for name, _ in targets:
        med = statistics.median(got[name])
        if name == base:
            lines.append(f"| {name} | {med:,.0f} | | |")
            continue
        cost = statistics.median(1 - a / b for a, b in zip(got[base], got[name], strict=True))
        lines.append(
            f"| {name} | {med:,.0f} | {cost * 100:.1f}% | {'PASS' if cost < 0.05 else 'MISS'} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("files").add_argument("dir", type=Path)
    sub.add_parser("ports").add_argument("n", type=int)
    sub.add_parser("field").add_argument("key")
    p = sub.add_parser("stack-env")
    p.add_argument("pid", type=int)
    p.add_argument("log", type=Path)
    p.add_argument("data_dir", type=Path)
    p = sub.add_parser("costs")
    p.add_argument("rounds", type=int)
    p.add_argument("seconds", type=int)
    p.add_argument("conns", type=int)
    p.add_argument("targets", nargs="+", help="NAME=URL; the first is the one costed")
    p = sub.add_parser("verdict")
    p.add_argument("file", type=Path)
    p.add_argument("--edge", default="edge")
    p.add_argument("--nometrics", default="edge_nometrics")
    p.add_argument("--nolinkstats", default="edge_nolinkstats")
    p.add_argument("--bare", default="aiohttp_bare", help="aiohttp alone: the ceiling")
    p.add_argument("--lookup", default="aiohttp_lookup", help="aiohttp + the token lookup")
    a = ap.parse_args()

    if a.cmd == "files":
        write_files(a.dir)
    elif a.cmd == "ports":
        print(" ".join(map(str, free_ports(a.n))))
    elif a.cmd == "field":
        raw = sys.stdin.read()
        try:
            value = json.loads(raw)[a.key]
        except (ValueError, KeyError, TypeError):
            raise SystemExit(f"edge_report: no '{a.key}' in response: {raw[:500]}") from None
        print(value)
    elif a.cmd == "stack-env":
        env = stack_env(a.pid, a.log, a.data_dir)
        sys.stdout.write("".join(f"{k}={v}\0" for k, v in env.items()))
    elif a.cmd == "costs":
        targets = [tuple(t.split("=", 1)) for t in a.targets]
        print("\n".join(costs(a.rounds, a.seconds, a.conns, targets)))
    elif a.cmd == "verdict":
        text = a.file.read_text(errors="replace")
        rows = parse_table(text)
        print("\n".join(verdict(rows, a.edge, a.nometrics, a.nolinkstats)))
        if lines := ceiling(rows, a.edge, a.bare, a.lookup):
            print(
                f"\nThe ceilings, same run: aiohttp alone ({a.bare}) and aiohttp with the edge's "
                f"token lookup ({a.lookup}), both bench/bare_aiohttp.py:\n"
            )
            print("\n".join(lines))
        # peers.sh reports failed requests on stderr ("edge: 12 non-2xx on range"): wrk counts
        # them as served, so any of them makes that figure meaningless.
        for line in text.splitlines():
            names = "|".join(map(re.escape, (a.edge, a.nometrics, a.nolinkstats)))
            if re.match(rf"({names}): \d+ non-2xx", line):
                print(f"\n**Invalid figure**: {line.strip()} (wrk counts them as served).")


if __name__ == "__main__":
    main()
