"""The invariants, judged against what the load was told (`History`) and what the stores
hold once the faults are over and a reconcile pass has run.

- `check_reads` (pure): no edge 200/206 for a URL in a request that started after its
  revoke or delete was acknowledged, or after every deadline it could have had; every
  body served byte-exact.
- `check_state`: every acknowledged upload downloads byte-exact; no object without a live
  row, no live row without its object, no open multipart upload, no deletion left
  unfinished; no queued job for a missing row, no pending event; no token-cache entry
  without a live URL, and every live URL's entry present and current; each team's live
  URLs as acknowledged, and never over the quota.
- `check_quota_fill`: with the load gone, a team can create exactly `quota` live URLs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import aiohttp

from shared import public_urls, token_cache
from shared.resources import Resources
from tests.chaos.history import File, History, sha256
from tests.helpers import stray_jobs


@dataclass
class Verdict:
    """Failures by invariant (empty lists: it held), and what was counted on the way."""

    failures: dict[str, list[str]] = field(default_factory=dict)
    counted: dict[str, int] = field(default_factory=dict)

    def fail(self, invariant: str, detail: str) -> None:
        self.failures.setdefault(invariant, []).append(detail)

    def held(self, invariant: str) -> None:
        self.failures.setdefault(invariant, [])

    @property
    def ok(self) -> bool:
        return not any(self.failures.values())


def deadline_bound(h: History, token: str, started: float) -> float | None:
    """The latest deadline any request sent before `started` could have given the token
    (None: none, or one that never expires)."""
    file_id = h.tokens[token].file_id
    bounds = [
        d.bound
        for d in h.deadlines.get(file_id, [])
        if d.sent < started and d.token in (token, None)
    ]
    if not bounds or any(b is None for b in bounds):
        return None
    return max(b for b in bounds if b is not None)


def _earliest_deadline(h: History, token: str, before: float) -> float | None:
    """The earliest deadline the token could have had for a read that ended at `before`
    (acknowledged ones: what the API said; others: already counted as unknown)."""
    file_id = h.tokens[token].file_id
    bounds = [
        d.bound
        for d in h.deadlines.get(file_id, [])
        if d.token == token and d.bound is not None and d.sent < before
    ]
    return min(bounds) if bounds else None


def _live_throughout(h: History, token: str, started: float, ended: float) -> bool:
    """Whether the load knows the URL was live for the whole read: created (acknowledged)
    before it began, no request that could change it sent before it ended, no outcome
    left unknown on its file, and its deadline (with a second to spare) after it."""
    t = h.tokens[token]
    if started <= t.created_ack:
        return False
    if any(begin < ended and started < end for begin, end in h.blackouts):
        return False
    if any(sent < ended for sent in h.unknown.get(t.file_id, [])):
        return False
    if any(t.created_ack < sent < ended for sent in h.touched.get(t.file_id, [])):
        return False
    deadline = _earliest_deadline(h, token, ended)
    return deadline is None or ended < deadline - 1


def check_reads(h: History, v: Verdict) -> None:
    after_ack = "no edge 200 after revoke/delete acknowledged"
    past_deadline = "no edge 200 past the URL's deadline"
    exact = "edge bodies byte-exact"
    serves = "a live URL is never answered 404"
    for inv in (after_ack, past_deadline, exact, serves):
        v.held(inv)
    served = 0
    for r in h.reads:
        if r.status == 404 and _live_throughout(h, r.token, r.started, r.ended):
            t = h.tokens[r.token]
            v.fail(
                serves,
                f"{r.token[:6]}… ({t.file_id}) 404 {r.started - t.created_ack:.3f}s after "
                "it was created, with nothing sent that could end it",
            )
        if r.status not in (200, 206):
            continue
        served += 1
        t = h.tokens[r.token]
        f = h.files[t.file_id]
        if t.dead_ack is not None and r.started > t.dead_ack:
            v.fail(
                after_ack,
                f"{r.token[:6]}… ({t.file_id}) answered {r.status} to a GET started "
                f"{r.started - t.dead_ack:.3f}s after it was acknowledged dead",
            )
        bound = deadline_bound(h, r.token, r.started)
        if bound is not None and r.started > bound:
            v.fail(
                past_deadline,
                f"{r.token[:6]}… answered {r.status} {r.started - bound:.3f}s past its deadline",
            )
        if r.status == 200:
            want = f.sha256
        else:
            first, last = r.ranged or (0, f.size - 1)
            want = sha256(h.sent_bytes[f.id][first : last + 1])
        if r.body_sha256 != want:
            v.fail(exact, f"{r.token[:6]}… ({f.id}) {r.status} body differs from what was sent")
    v.counted["edge 200/206 checked"] = served


async def _download(api: aiohttp.ClientSession, f: File) -> tuple[int, str | None]:
    async with api.get(f"/v1/files/{f.id}/content") as r:
        if r.status != 200:
            return r.status, None
        digest = hashlib.sha256()
        async for chunk in r.content.iter_chunked(256 * 1024):
            digest.update(chunk)
        return r.status, digest.hexdigest()


async def check_uploads(h: History, apis: dict[str, aiohttp.ClientSession], v: Verdict) -> None:
    inv = "every acknowledged upload downloads byte-exact"
    gone_inv = "a deleted file stays deleted"
    v.held(inv)
    v.held(gone_inv)
    checked = 0
    for f in h.files.values():
        status, digest = await _download(apis[f.team], f)
        if f.deleted_ack is not None:
            if status != 404:
                v.fail(gone_inv, f"{f.id} deleted (acknowledged) but /content answers {status}")
            continue
        if status == 404 and f.delete_unknown:
            continue  # a delete whose answer was lost did its work
        checked += 1
        if status != 200:
            v.fail(inv, f"{f.id} ({f.via}, {f.size} B): /content answers {status}")
        elif digest != f.sha256:
            v.fail(inv, f"{f.id} ({f.via}, {f.size} B): bytes differ from those uploaded")
    v.counted["uploads downloaded"] = checked


async def check_state(res: Resources, h: History, teams: dict[str, int], v: Verdict) -> None:
    """`teams`: name -> id, the load's teams (others, like the probe's, are not judged on
    acknowledgements but are on orphans)."""
    await _objects_and_rows(res, h, teams, v)
    await _jobs_and_events(res, v)
    await _token_cache(res, v)
    await _urls_and_quota(res, h, teams, v)
    await _link_hits(res, h, v)


async def _objects_and_rows(res: Resources, h: History, teams: dict[str, int], v: Verdict) -> None:
    orphans, rows_lost = "no object without a live row", "no live row without its object"
    unfinished, uploads = "no deletion left unfinished", "no open multipart upload"
    for inv in (orphans, rows_lost, unfinished, uploads):
        v.held(inv)
    keys = {k async for k, _ in res.storage.list_objects("objects/")}
    rows = await res.db.fetch(
        "SELECT id, team_id, object_key, deleted_at, object_deleted_at FROM files"
    )
    live = {r["object_key"] for r in rows if r["deleted_at"] is None}
    for key in sorted(keys - live):
        state = next((r for r in rows if r["object_key"] == key), None)
        why = "no row" if state is None else "its row is deleted"
        v.fail(orphans, f"{key}: {why}")
    for key in sorted(live - keys):
        v.fail(rows_lost, key)
    for r in rows:
        if r["deleted_at"] is not None and r["object_deleted_at"] is None:
            v.fail(unfinished, f"{r['id']} deleted at {r['deleted_at']:%T}, object pending")
    result = await res.storage.run_in_thread(
        res.storage.client._list_multipart_uploads, res.storage.bucket
    )
    for u in result.uploads:
        v.fail(uploads, f"{u.object_name} (upload {u.upload_id[:8]}…, {u.initiated_time})")
    v.counted["objects"] = len(keys)
    v.counted["file rows"] = len(rows)
    known = set(h.files)
    ours = set(teams.values())
    unacked = [
        r["id"]
        for r in rows
        if r["team_id"] in ours and r["deleted_at"] is None and r["id"] not in known
    ]
    # Uploads committed whose answer was lost (the API killed after the commit): live files
    # the client was never told of. Allowed, and counted.
    v.counted["live rows never acknowledged"] = len(unacked)


async def _jobs_and_events(res: Resources, v: Verdict) -> None:
    from shared import events

    stray, pending = "no queued job for a missing row", "no file event left pending"
    v.held(stray)
    v.held(pending)
    jobs = [j.decode() for j in await res.redis.zrange(res.settings.arq_queue_name, 0, -1)]
    for j in sorted(await stray_jobs(res)):
        v.fail(stray, j)
    for j in jobs:
        if not j.startswith(("file-expiry:", "url-expiry:")):
            v.fail(stray, f"{j}: not a job this system queues")
    v.counted["queued jobs"] = len(jobs)
    summary = await res.redis.xpending(events.STREAM, events.GROUP)
    if summary["pending"]:
        v.fail(pending, f"{summary['pending']} delivered, never acknowledged")


async def _token_cache(res: Resources, v: Verdict) -> None:
    stray, missing = "no token-cache entry without a live URL", "every live URL has its entry"
    v.held(stray)
    v.held(missing)
    tokens = [t async for batch in res.tokens.tokens(500) for t in batch]
    live_rows = await res.db.fetch(
        """SELECT u.token, u.expires_at, u.version, f.id, f.bytes, f.sniffed_type, f.sha256,
                  f.object_key, f.created_at
             FROM public_urls u JOIN files f ON f.id = u.file_id
            WHERE u.revoked_at IS NULL AND f.deleted_at IS NULL
              AND (u.expires_at IS NULL OR u.expires_at > now() + interval '1 second')"""
    )
    live = {r["token"]: r for r in live_rows}
    dead = [t for t in tokens if t not in live]
    # An entry whose deadline passes between the scan and the query is gone by its TTL.
    present = await res.tokens.present(dead) if dead else []
    for t, there in zip(dead, present, strict=True):
        if there:
            v.fail(stray, f"{t[:6]}…")
    for t, r in live.items():
        raw = await res.tokens.redis.get(token_cache.key(t))
        want = public_urls.record_for(r, r).encode()
        if raw is None:
            v.fail(missing, f"{t[:6]}… ({r['id']}): no entry")
        elif raw != want:
            v.fail(missing, f"{t[:6]}… ({r['id']}): entry differs from its row")
    v.counted["token-cache entries"] = len(tokens)
    v.counted["live URLs"] = len(live)


async def _urls_and_quota(res: Resources, h: History, teams: dict[str, int], v: Verdict) -> None:
    as_told, quota_inv = "live URLs as acknowledged", "live URLs within the quota"
    v.held(as_told)
    v.held(quota_inv)
    quota = res.settings.public_url_quota
    rows = await res.db.fetch(
        """SELECT u.token, u.file_id, u.team_id,
                  u.revoked_at IS NULL AND (u.expires_at IS NULL OR u.expires_at > now()) AS live,
                  u.revoke_reason, u.expires_at <= now() AS past
             FROM public_urls u"""
    )
    by_token = {r["token"]: r for r in rows}
    live_by_file = {r["file_id"]: r["token"] for r in rows if r["live"]}
    for f in h.files.values():
        if f.deleted_ack is not None or f.delete_unknown or f.url_unknown:
            continue
        db_live = live_by_file.get(f.id)
        if db_live is not None and db_live != f.live_token:
            v.fail(as_told, f"{f.id}: {db_live[:6]}… is live, acknowledged {f.live_token}")
        elif db_live is None and f.live_token is not None:
            row = by_token[f.live_token]
            if not (row["past"] or row["revoke_reason"] == "expired"):
                v.fail(as_told, f"{f.id}: {f.live_token[:6]}… acknowledged live, now dead")
    for name, team_id in teams.items():
        n = sum(1 for r in rows if r["team_id"] == team_id and r["live"])
        v.counted[f"live URLs, team {name}"] = n
        if n > quota:
            v.fail(quota_inv, f"team {name}: {n} live URLs, quota {quota}")


async def check_quota_fill(
    api: aiohttp.ClientSession, res: Resources, team: str, team_id: int, v: Verdict
) -> None:
    """Create URLs for the team's files until refused: exactly `quota` must be live."""
    inv = "the quota admits exactly its count"
    v.held(inv)
    quota = res.settings.public_url_quota
    free = await res.db.fetch(
        """SELECT f.id FROM files f
            WHERE f.team_id = $1 AND f.deleted_at IS NULL AND NOT EXISTS (
                  SELECT 1 FROM public_urls u WHERE u.file_id = f.id AND u.revoked_at IS NULL
                     AND (u.expires_at IS NULL OR u.expires_at > now()))
            ORDER BY f.id""",
        team_id,
    )
    statuses: list[int] = []
    for r in free:
        async with api.post(f"/v1/files/{r['id']}/public-url", json={}) as resp:
            statuses.append(resp.status)
            await resp.read()
        if resp.status != 200:
            break
    live = await res.db.fetchval(
        """SELECT count(*) FROM public_urls WHERE team_id = $1 AND revoked_at IS NULL
              AND (expires_at IS NULL OR expires_at > now())""",
        team_id,
    )
    if statuses and statuses[-1] != 200 and statuses[-1] != 429:
        v.fail(inv, f"team {team}: a create answered {statuses[-1]}")
    if live > quota or (statuses and statuses[-1] == 429 and live != quota):
        v.fail(inv, f"team {team}: refused at {live} live URLs, quota {quota}")
    v.counted[f"creates to fill team {team}"] = statuses.count(200)


def summary_of(v: Verdict) -> list[tuple[str, int, str]]:
    """(invariant, failures, first failure) per invariant, in the order checked."""
    return [(inv, len(fails), fails[0] if fails else "") for inv, fails in v.failures.items()]


async def _link_hits(res: Resources, h: History, v: Verdict) -> None:
    """The edges' per-link hits, folded into PostgreSQL by the worker, against the 200/206
    answers the readers got: a crash may lose the last second's counts (reported), but a
    count must never be doubled."""
    inv = "link hits never exceed the answers served"
    v.held(inv)
    served: dict[str, int] = {}
    unsure: dict[str, int] = {}
    for r in h.reads:
        if r.status in (200, 206):
            served[r.token] = served.get(r.token, 0) + 1
        elif r.status is None:  # the edge may have served it after we gave up
            unsure[r.token] = unsure.get(r.token, 0) + 1
    rows = await res.db.fetch(
        "SELECT token, hits FROM public_urls WHERE token = any($1::text[])", list(h.tokens)
    )
    hits = {r["token"]: r["hits"] for r in rows}
    for token, n in hits.items():
        if n > served.get(token, 0) + unsure.get(token, 0):
            v.fail(inv, f"{token[:6]}…: {n} hits counted, {served.get(token, 0)} served")
    v.counted["link hits counted"] = sum(hits.values())
    v.counted["of edge 200/206 served"] = sum(served.values())
