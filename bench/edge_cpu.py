"""What one request costs a running edge in CPU, and where that CPU goes (issue 12's profile).

req/s on a machine shared with other work moves ±30% with the neighbours' load; the CPU
time the edge's processes spend per request does not (much): it is what this script
measures. For each URL it runs wrk (`--rounds` rounds of `--seconds`, the URLs taking
turns) and reads the edge processes' user and system CPU from /proc before and after:
CPU µs per request, median of the rounds, beside wrk's own CPU share: at 100% (one core,
all the time) the figure is the load generator's ceiling, not the server's, as it is for a
10 MiB object on loopback (README). `bench/bare_aiohttp.py` is the peer to measure beside
the edge: aiohttp alone, answering from memory. With `--profile`, it then samples the edge with
py-spy (`pip install py-spy`; not a project dependency) under the same load and prints the
share of samples per module and the top frames, the time in socket writes left out (py-spy
samples wall time, and a process preempted inside write(2) by the client it just woke
would otherwise look busy there).

Usage: python bench/edge_cpu.py --pid PID [--pid PID2] URL [URL...]
       [--rounds 5] [--seconds 5] [--conns 16] [--range bytes=5000000-5065535]
       [--profile 12]
Each --pid is an edge process (`filecdn edge --workers 1`) or a supervisor, whose workers are
counted with it. Give several URLs served by different edges (with one --pid per URL, in
the same order) to compare two builds of the edge in one run.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_TCK = os.sysconf("SC_CLK_TCK")
_SITE = re.compile(r" \(/.*?/(site-packages|lib/python3\.\d+)/")
_MODULES = ("aiohttp", "redis", "multidict", "yarl", "asyncio", "cdn_edge", "shared", "uvloop")


def tree(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += tree(int(child))
    return out


def cpu_seconds(pid: int) -> tuple[float, float]:
    user = system = 0
    for p in tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(") ", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return user / _TCK, system / _TCK


@dataclass(frozen=True)
class Wrk:
    requests: int
    rps: float
    mbps: float  # response bytes, MB/s
    cpu: float  # wrk's own CPU time over the run's wall time (1.0: one core, all the time)


_UNITS = {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}


def wrk(url: str, seconds: float, conns: int, script: str | None) -> Wrk:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency"]
    if script:
        argv += ["-s", script]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    mbs = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out)
    if n is None or rps is None or mbs is None or "Non-2xx" in out:
        raise SystemExit(f"edge_cpu: wrk on {url} failed:\n{out}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    mbps = float(mbs.group(1)) * _UNITS[mbs.group(2)]
    return Wrk(int(n.group(1)), float(rps.group(1)), mbps, cpu / wall)


def profile(pid: int, url: str, seconds: int, conns: int, script: str | None, top: int) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("\n(no py-spy: pip install py-spy for the profile)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.txt"
        argv = [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{seconds + 3}s",
            *(["-s", script] if script else []),
        ]
        load = subprocess.Popen([*argv, url], stdout=subprocess.DEVNULL)
        try:
            subprocess.run(
                [spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "400", "--gil",
                 "--native", "-f", "raw", "-o", str(raw)],
                check=True, capture_output=True,
            )  # fmt: skip
        finally:
            load.wait()
        summarise(raw.read_text(), top)


def summarise(raw: str, top: int) -> None:
    modules: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = left_out = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        if re.match(r"(write|writev|sendmsg|send) ", frames[-1]):
            left_out += n
            continue
        total += n
        for f in set(re.sub(r":\d+\)$", ")", f) for f in frames):
            inclusive[f] += n
        # Native frames (the interpreter, uvloop, the C parsers) count for the Python code
        # that called them: the deepest Python frame of the sample says whose work it was.
        py = next((f for f in reversed(frames) if re.search(r"\.py:\d+\)$", f)), "")
        if "asyncio/runners.py" in py:  # below it only the loop itself: uvloop, C task steps
            modules["event loop (uvloop, asyncio's C tasks)"] += n
        else:
            modules[next((m for m in _MODULES if f"({m}/" in py or f"/{m}/" in py), "other")] += n
    if not total:
        print("\nno samples")
        return
    print(f"\nprofile: {total} samples holding the GIL ({left_out} in socket writes left out)")
    print("samples by the module of their deepest Python frame:")
    for name, n in modules.most_common():
        print(f"  {n * 100 / total:5.1f}% {name}")
    print("top frames, inclusive (Python code only):")
    shown = 0
    for frame, n in inclusive.most_common():
        if re.search(r"\.py\)$", frame) and not re.search(
            r"(runners|click|cli/main|supervisor)", frame
        ):
            print(f"  {n * 100 / total:5.1f}% {_SITE.sub(' (', frame)}")
            shown += 1
            if shown == top:
                break


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("urls", nargs="+")
    ap.add_argument("--pid", type=int, action="append", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--range", help="a Range header value sent with every request")
    ap.add_argument("--profile", type=int, metavar="TOP", help="py-spy profile: top N frames")
    a = ap.parse_args()
    pids = a.pid if len(a.pid) == len(a.urls) else [a.pid[0]] * len(a.urls)
    with tempfile.TemporaryDirectory() as tmp:
        script = None
        if a.range:
            script = str(Path(tmp) / "range.lua")
            Path(script).write_text(f'wrk.headers["Range"] = "{a.range}"\n')
        got: dict[str, list[tuple[float, float, Wrk]]] = {u: [] for u in a.urls}
        for r in range(a.rounds):
            turn = a.urls[r % len(a.urls) :] + a.urls[: r % len(a.urls)]
            for url in turn:
                pid = pids[a.urls.index(url)]
                u0, s0 = cpu_seconds(pid)
                w = wrk(url, a.seconds, a.conns, script)
                u1, s1 = cpu_seconds(pid)
                got[url].append(((u1 - u0) * 1e6 / w.requests, (s1 - s0) * 1e6 / w.requests, w))
        print(f"CPU per request, median of {a.rounds} rounds (wrk 1 thread x {a.conns}):")
        print(
            f"{'user µs':>9} {'sys µs':>8} {'total µs':>9} {'req/s':>8} {'MB/s':>7} {'wrk':>5}  url"
        )
        for url, rows in got.items():
            user = statistics.median(x[0] for x in rows)
            system = statistics.median(x[1] for x in rows)
            total = statistics.median(x[0] + x[1] for x in rows)
            rps = statistics.median(x[2].rps for x in rows)
            mbps = statistics.median(x[2].mbps for x in rows)
            client = statistics.median(x[2].cpu for x in rows)
            print(
                f"{user:9.1f} {system:8.1f} {total:9.1f} {rps:8,.0f} {mbps:7,.0f} {client:5.0%}",
                url,
            )
        print("wrk: the load generator's own CPU over the run (100%: one core, all the time;")
        print("at 100% the figure is the client's ceiling, not the server's).")
        if a.profile:
            profile(pids[0], a.urls[0], 12, a.conns, script, a.profile)


if __name__ == "__main__":
    main()
