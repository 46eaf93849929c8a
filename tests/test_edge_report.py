"""The edge benchmark's verdict says which ceiling stands below which target, from the table
peers.sh prints (`bench/edge_report.py`, standard library only: pure logic, no servers).

The closing notes lean on that sentence ("aiohttp itself is the ceiling below the target"),
so it must name a ceiling only when the figures put the target above it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "edge_report.py"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("edge_report", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(bare: str, lookup: str) -> str:
    # peers.sh's table as it prints it; nginx-cache: 90,000 small, 60,000 range, 1,880 MB/s.
    rows = [
        "target            small_rps  small_p99   large_MBps    range_rps",
        "origin                12400        6.1       2870.0         6853",
        "nginx-link             9221        8.3       1080.0         5235",
        "nginx-cache           90000        1.9       1880.0        60000",
        f"aiohttp_bare   {bare}",
        f"aiohttp_lookup {lookup}",
        "edge                  27299        3.6       2780.0        17452",
        "edge_nolinkstats      26191        3.2       2680.0        16886",
        "edge_nometrics        28218        3.8       2610.0        17578",
    ]
    return "\n".join(rows) + "\n\nratios to nginx-link (small_rps, large_MBps, range_rps):\n"


def _ceiling(report: ModuleType, text: str) -> str:
    return "\n".join(
        report.ceiling(report.parse_table(text), "edge", "aiohttp_bare", "aiohttp_lookup")
    )


def test_a_target_above_aiohttp_alone_is_named_as_aiohttp_s_ceiling(report: ModuleType) -> None:
    # range target 30,000 > aiohttp alone's 29,000; 10 KiB target 45,000 between the two.
    text = _ceiling(report, _table("51401 3.4 2720.0 29000", "34319 3.7 2550.0 22126"))
    aiohttp_line, lookup_line = text.splitlines()[-2:]
    assert "aiohttp alone serves: 64 KiB range req/s, 10 MiB MB/s" in aiohttp_line
    assert "10 KiB" not in aiohttp_line
    assert "only the token lookup to do: 10 KiB req/s " in lookup_line
    assert "| 64 KiB range req/s | 60,000 | 30,000 (0.5x) | 29,000 | 22,126 | 17,452 |" in text


def test_targets_below_both_ceilings_leave_the_verdict_to_the_edge_s_own_work(
    report: ModuleType,
) -> None:
    text = _ceiling(report, _table("95000 2.1 3900.0 70000", "90000 2.1 3900.0 65000"))
    assert "ceiling below the target" not in text
    assert text.splitlines()[-1].startswith("Every target is below what aiohttp serves")


def test_an_output_without_the_aiohttp_peers_prints_no_ceiling_table(report: ModuleType) -> None:
    text = "\n".join(
        line for line in _table("1 1 1 1", "1 1 1 1").splitlines() if "aiohttp" not in line
    )
    assert _ceiling(report, text) == ""
    # and the verdict table is still there
    rows = report.parse_table(text)
    verdict = report.verdict(rows, "edge", "edge_nometrics", "edge_nolinkstats")
    assert any("64 KiB Range req/s vs nginx proxy_cache" in line for line in verdict)
