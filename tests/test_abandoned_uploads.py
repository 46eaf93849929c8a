"""A multipart upload left open by an API process that died mid-upload is aborted by the
reconcile sweep, once older than any live upload can be; a younger one is never cut."""

from __future__ import annotations

import contextlib
import dataclasses
import time

from minio.error import S3Error

from shared.resources import Resources
from shared.storage import OpenUpload
from tests.helpers import wait_for
from worker import reconcile

AGE = 2  # seconds: the sweep's grace and the upload body deadline, in this test


async def _open_upload(res: Resources, key: str) -> OpenUpload:
    upload_id = await res.storage.run_in_thread(
        res.storage.client._create_multipart_upload, res.storage.bucket, key, {}
    )
    return OpenUpload(key, upload_id, None)


async def _open_ids(res: Resources) -> set[str]:
    return {u.upload_id for u in await res.storage.open_uploads("objects/abandoned-")}


async def test_the_sweep_aborts_uploads_left_open_and_keeps_recent_ones(res: Resources) -> None:
    settings = res.settings.model_copy(
        update={"sweep_grace_seconds": AGE, "upload_body_timeout": float(AGE)}
    )
    reconciler = reconcile.Reconciler(dataclasses.replace(res, settings=settings))
    old = await _open_upload(res, f"objects/abandoned-old-{time.time_ns()}")
    started = time.monotonic()

    async def past_the_age() -> bool:  # S3 reports initiation times in whole seconds
        return time.monotonic() - started > AGE + 1.5

    await wait_for(past_the_age, timeout=10, what="the old upload to age")
    young = await _open_upload(res, f"objects/abandoned-young-{time.time_ns()}")
    try:
        assert {old.upload_id, young.upload_id} <= await _open_ids(res)
        assert await reconciler.abort_abandoned_uploads() >= 1
        still_open = await _open_ids(res)
        assert old.upload_id not in still_open
        assert young.upload_id in still_open
    finally:
        for upload in (old, young):
            with contextlib.suppress(S3Error):  # already aborted by the sweep
                await res.storage.abort_upload(upload)
    assert not {old.upload_id, young.upload_id} & await _open_ids(res)
