"""The rollout rehearsal, short: three edge instances behind HAProxy (which health-checks
their /readyz), rolled one at a time the way deploy/base/edge.yaml has Kubernetes do it,
and scaled 1 -> 3 -> 1, under continuous small GETs, slow large downloads and revokes.
No request fails, no download is cut, no revoked URL is served after the API said so.
`make rehearsal` (bench/rehearsal.py) runs the long version with the manifests' timings."""

from __future__ import annotations

import itertools
from pathlib import Path

import aiohttp
import pytest

from bench.rehearsal import LoadShape, Timings, haproxy_missing, rehearse
from cli.embedded import free_port
from tests.conftest import Stack


@pytest.fixture(scope="session")
def haproxy() -> None:
    why = haproxy_missing()
    if why is not None:
        pytest.skip(why)


async def test_rolling_and_scaling_edges_behind_haproxy_fail_no_request_and_serve_no_revoked_url(
    haproxy: None, stack: Stack, api: aiohttp.ClientSession, tmp_path: Path
) -> None:
    report = await rehearse(
        env={**stack.env, "LOG_FORMAT": "json"},
        api=api,
        workdir=tmp_path,
        # The manifests' order with shorter waits: 10 s of preStop cover kube-proxy and
        # ingress catching up; HAProxy here takes a server out the moment it is told.
        timings=Timings(prestop=0.5, drain_delay=0.5, drain_timeout=10, grace=20),
        workers=1,
        shape=LoadShape(
            small_clients=6,
            large_clients=3,
            revocable_clients=2,
            # 8 MiB read at 3 MiB/s: more than the sockets buffer, and 2.7 s per download,
            # so the edges are still sending some whenever they get SIGTERM.
            large_bytes=8 * 1024 * 1024,
            large_rate=3 * 1024 * 1024,
            small_pause=0.01,
            revocable_urls=12,
            revoke_every=1.5,
        ),
        steady=0.5,
        ports=(free_port() for _ in itertools.count()),
    )
    print("\n" + report.table())
    total = report.total
    assert [o.failed for o in total.failed] == []
    assert [o.failed for o in total.cut] == []
    assert [(o.phase, o.status) for o in total.revoked_200] == []
    # ... and it did exercise what it claims: drains with requests under way, revoked URLs
    # asked for after their revoke, whole large downloads.
    assert len(total.drains) == 5 and not any(d.killed or d.exit_code for d in total.drains)
    assert sum(report.under_way(d) for d in total.drains) > 0
    assert sum(o.after_revoke for o in total.outcomes) > 0
    assert sum(o.kind == "large" for o in total.outcomes) > 0
