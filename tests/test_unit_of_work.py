"""The unit of work's promises, on fakes (no servers): token-cache writes happen inside the
transaction, everything else once after commit and in the documented order, a failing
effect neither stops the others nor fails the use case, and a rollback runs nothing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from shared import events, metrics, scheduling
from shared.actors import WORKER, Actor
from shared.resources import Resources
from shared.settings import Settings
from shared.token_cache import UrlRecord
from shared.unit_of_work import METRIC, Change, ChangeKind, UnitOfWork, unit_of_work

AT = datetime(2026, 3, 15, tzinfo=UTC)
FILE = "file_00000000-0000-4000-8000-000000000001"
RECORD = UrlRecord(FILE, f"{FILE}.png", "objects/x", "image/png", 1, '"e"', 0, None, 1)


class Journal:
    """Everything the fakes saw, in order."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.failing: set[str] = set()

    def add(self, entry: str) -> None:
        self.entries.append(entry)
        if entry.split(" ")[0] in self.failing:
            raise ConnectionError(f"{entry} failed")


class FakeConnection:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.audit_rows: list[tuple[Any, ...]] = []

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        assert sql.lstrip().startswith("INSERT INTO audit_events")
        self.journal.add(f"audit {len(rows)}")
        self.audit_rows += rows

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.journal.add("begin")
        try:
            yield
        except BaseException:
            self.journal.add("rollback")
            raise
        self.journal.add("commit")


class FakePool:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        try:
            yield FakeConnection(self.journal)
        finally:
            self.journal.add("release")


class FakeTokens:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def put(self, token: str, record: UrlRecord) -> None:
        self.journal.add(f"cache_put {token}")

    async def delete(self, *tokens: str) -> None:
        self.journal.add(f"cache_delete {' '.join(tokens)}")


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> Journal:
    j = Journal()

    async def publish(redis: Any, event: events.FileEvent) -> str:
        j.add(f"publish {event.file_id}")
        return "1-0"

    async def enqueue(arq: Any, job: scheduling.Job) -> None:
        j.add(f"enqueue {job.job_id}")

    async def count(res: Any, name: str, n: int = 1) -> None:
        j.add(f"count {name}")

    monkeypatch.setattr(events, "publish", publish)
    monkeypatch.setattr(scheduling, "enqueue", enqueue)
    monkeypatch.setattr(metrics, "count", count)
    return j


@pytest.fixture
def fake_res(journal: Journal) -> Resources:
    return Resources(Settings(), None, None, FakeTokens(journal), FakePool(journal), object())  # type: ignore[arg-type]


KEY = Actor.api_key(7, "fcdn_abcdefg")


def _everything(uow: UnitOfWork) -> None:
    """Register one of each effect, in the opposite order to the one they run in."""
    uow.count("objects.deleted", file_id=FILE)
    uow.record(Change(ChangeKind.URL_CREATED, FILE, 1, token="tokenABCDEF", new_expires_at=AT))
    uow.schedule(scheduling.url_expiry(5, 2, AT))
    uow.publish(events.FileEvent(events.FILE_DELETED, FILE, "objects/x", 1, "deleted"))


async def test_cache_writes_happen_inside_and_effects_after_commit_in_order(
    fake_res: Resources, journal: Journal
) -> None:
    with capture_logs() as logs:
        async with unit_of_work(fake_res, KEY) as uow:
            await uow.cache_put("tokenABCDEF", RECORD)
            _everything(uow)
            await uow.cache_delete("old1", "old2")
            journal.add("body done")
    assert journal.entries == [
        "begin",
        "cache_put tokenABCDEF",
        "cache_delete old1 old2",
        "body done",
        "audit 1",  # the change's row, the transaction's last statement
        "commit",
        "release",  # the connection goes back before any effect runs
        f"publish {FILE}",
        "enqueue url-expiry:5:2",
        "count url.created",
        "count objects.deleted",
    ]
    assert uow.committed
    created = next(e for e in logs if e["event"] == "url.created")
    assert created["actor"] == "key fcdn_abcdefg…"
    assert created["token"] == "toke"  # never the whole token
    assert created["expires_at"] == AT.isoformat()
    assert uow.conn.audit_rows == [  # type: ignore[attr-defined]
        (1, FILE, "url.created", "api_key", 7, "fcdn_abcdefg", "toke", None, AT)
    ]


async def test_a_failing_effect_is_logged_and_the_others_still_run(
    fake_res: Resources, journal: Journal
) -> None:
    journal.failing = {"publish", "enqueue", "count"}
    with capture_logs() as logs:
        async with unit_of_work(fake_res, WORKER) as uow:  # no exception reaches the caller
            _everything(uow)
    assert [e for e in journal.entries if " " in e] == [
        "audit 1",
        f"publish {FILE}",
        "enqueue url-expiry:5:2",
        "count url.created",
        "count objects.deleted",
    ]
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert warnings == [
        "event not published; reconcile will finish it",
        "job not scheduled; reconcile will schedule it",
        "metrics bucket not updated",
        "metrics bucket not updated",
    ]


async def test_a_failing_use_case_rolls_back_and_runs_no_effect(
    fake_res: Resources, journal: Journal
) -> None:
    with pytest.raises(LookupError):
        async with unit_of_work(fake_res, KEY) as uow:
            _everything(uow)
            raise LookupError("the use case refused")
    assert journal.entries == ["begin", "rollback", "release"]
    assert not uow.committed


async def test_a_failing_cache_delete_aborts_the_change(
    fake_res: Resources, journal: Journal
) -> None:
    """A revoke whose cache delete fails must not commit: the row stays as it was."""
    journal.failing = {"cache_delete"}
    with pytest.raises(ConnectionError):
        async with unit_of_work(fake_res, KEY) as uow:
            uow.record(Change(ChangeKind.URL_REVOKED, FILE, 1, token="tok"))
            await uow.cache_delete("tok")
    assert journal.entries == ["begin", "cache_delete tok", "rollback", "release"]  # no audit


async def test_an_early_return_still_commits_and_runs_what_was_registered(
    fake_res: Resources, journal: Journal
) -> None:
    async def use_case() -> str:
        async with unit_of_work(fake_res, WORKER) as uow:
            uow.count("objects.deleted")
            return "done"
        raise AssertionError("unreachable")

    assert await use_case() == "done"
    assert journal.entries == ["begin", "commit", "release", "count objects.deleted"]


def test_every_change_kind_names_its_counter_or_none() -> None:
    assert set(METRIC) == set(ChangeKind)
    assert METRIC[ChangeKind.URL_REVOKED_WITH_FILE] is None  # counted as the file's change
