"""Reconcile never writes back a token revoked while it restores the cache.

The window: a restore batch's statement has taken its snapshot (the URL is live in it) and
not yet locked the rows; a revoke commits there. The reconciler's `after_snapshot` hook sits
exactly in that window, so the revoke (through the real API, a second connection) commits
in it every time: no sleeps, no luck.
"""

from __future__ import annotations

import aiohttp
import pytest

from shared.resources import Resources
from tests.helpers import revoke, share
from worker import reconcile


async def _restore_with_revoke_in_the_window(
    res: Resources, api: aiohttp.ClientSession
) -> tuple[str, list[int]]:
    """Share a file, lose its cache entry, then restore while a revoke commits between the
    batch's snapshot and its locks. Returns the token and the revoke's status."""
    public = await share(api, b"\x89PNG\r\n\x1a\n" + bytes(64))
    await res.tokens.delete(public.token)  # lost: the restore would write it again
    statuses: list[int] = []

    async def revoke_now() -> None:
        if not statuses:  # one batch holds every URL; revoke once
            statuses.append((await revoke(api, public.file_id))[0])

    reconciler = reconcile.Reconciler(res, after_snapshot=revoke_now, batch_size=1_000_000)
    await reconciler.restore_cache()
    return public.token, statuses


async def test_restore_leaves_out_a_url_revoked_after_its_snapshot(
    res: Resources, api: aiohttp.ClientSession
) -> None:
    token, statuses = await _restore_with_revoke_in_the_window(res, api)
    assert statuses == [200]  # the revoke committed inside the window, not after the pass
    assert await res.tokens.get(token) is None
    assert await res.db.fetchval(
        "SELECT revoked_at IS NOT NULL FROM public_urls WHERE token = $1", token
    )


async def test_the_window_is_real_when_only_the_file_row_is_locked(
    res: Resources, api: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same sequence with the previous query (only the file row locked) writes the
    revoked token back: the test above would catch that regression."""
    monkeypatch.setattr(reconcile, "RESTORE_SQL", reconcile.RESTORE_SQL.replace("OF f, u", "OF f"))
    token, statuses = await _restore_with_revoke_in_the_window(res, api)
    assert statuses == [200]
    try:
        assert await res.tokens.get(token) is not None
    finally:
        await res.tokens.delete(token)  # leave nothing behind for the suite's checks
