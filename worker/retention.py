"""Retention: audit events, per-minute link stats and fold records are deleted by age.

Each table is emptied of old rows in batches (one short statement each, walking an index),
so that a sweep never holds many locks or one long transaction; a pass stops after
MAX_BATCHES per table and the next pass goes on. Run by reconcile at its sweep cadence.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from shared.db import Pool
from shared.resources import Resources
from worker import link_stats_fold

BATCH = 5000
MAX_BATCHES = 20

_AUDIT = """
DELETE FROM audit_events WHERE id = ANY(ARRAY(
    SELECT id FROM audit_events WHERE created_at < $1 ORDER BY created_at LIMIT $2))
"""
_MINUTES = """
DELETE FROM public_url_minutes WHERE (url_id, minute) IN (
    SELECT url_id, minute FROM public_url_minutes WHERE minute < $1 ORDER BY minute LIMIT $2)
"""
# Fold keys sort by their claim time (see link_stats_fold.folding_key): a primary-key range.
_FOLDS = """
DELETE FROM link_stats_folds WHERE fold_key = ANY(ARRAY(
    SELECT fold_key FROM link_stats_folds WHERE fold_key < $1 ORDER BY fold_key LIMIT $2))
"""


async def _in_batches(db: Pool, sql: str, cutoff: object) -> int:
    deleted = 0
    for _ in range(MAX_BATCHES):
        status = await db.execute(sql, cutoff, BATCH)
        n = int(status.rsplit(" ", 1)[-1])  # "DELETE n"
        deleted += n
        if n < BATCH:
            break
    return deleted


async def sweep(res: Resources) -> dict[str, int]:
    """One retention pass over the three tables; returns the rows deleted from each."""
    settings = res.settings
    now = datetime.now(UTC)
    folds_cutoff_ms = int((time.time() - link_stats_fold.fold_record_retention_seconds()) * 1000)
    return {
        "audit_events_deleted": await _in_batches(
            res.db, _AUDIT, now - timedelta(days=settings.audit_retention_days)
        ),
        "url_minutes_deleted": await _in_batches(
            res.db, _MINUTES, now - timedelta(days=settings.link_stats_retention_days)
        ),
        "fold_records_deleted": await _in_batches(
            res.db, _FOLDS, link_stats_fold.fold_records_before(folds_cutoff_ms)
        ),
    }
