"""The chaos run's read checks (`tests/chaos/checks.py`) judge edge answers by what the API
acknowledged, and only by that: they catch a 200 after a revoke or past a deadline, wrong
bytes and a live URL's 404, and leave alone what an unknown outcome may have caused."""

from __future__ import annotations

from tests.chaos.checks import Verdict, check_reads
from tests.chaos.history import Deadline, EdgeRead, File, History, sha256

DATA = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


def history(*, deadline: float | None = None) -> History:
    """One file, one URL created at t=10 (acknowledged), with `deadline` if given."""
    h = History()
    f = File("file_1", "alpha", sha256(DATA), len(DATA), 1.0, "rest")
    h.files[f.id] = f
    h.sent_bytes[f.id] = DATA
    h.token_seen(f, "tok", "http://edge/tok/file_1.png", 10.0)
    h.deadlines[f.id] = [Deadline(9.0, "tok", deadline)]
    h.touched[f.id] = [9.0]
    return h


def read(h: History, started: float, status: int, body: bytes = DATA, **kw: object) -> None:
    h.reads.append(EdgeRead("tok", started, status, sha256(body), ended=started + 0.01, **kw))  # type: ignore[arg-type]


def failures(h: History) -> dict[str, int]:
    v = Verdict()
    check_reads(h, v)
    return {inv: len(f) for inv, f in v.failures.items() if f}


def test_a_200_that_began_after_the_revoke_was_acknowledged_fails() -> None:
    h = history()
    h.tokens["tok"].kill(100.0)
    read(h, 99.0, 200)  # began before the answer: the race is allowed
    assert failures(h) == {}
    read(h, 100.2, 200)
    assert failures(h) == {"no edge 200 after revoke/delete acknowledged": 1}


def test_a_200_past_the_acknowledged_deadline_fails() -> None:
    h = history(deadline=50.0)
    read(h, 49.0, 200)
    assert failures(h) == {}
    read(h, 51.0, 200)
    assert failures(h) == {"no edge 200 past the URL's deadline": 1}


def test_an_update_whose_answer_was_lost_may_have_extended_the_deadline() -> None:
    h = history(deadline=50.0)
    h.deadlines["file_1"].append(Deadline(40.0, None, 40.0 + 3600 + 1))
    read(h, 51.0, 200)
    assert failures(h) == {}


def test_bodies_must_be_the_bytes_uploaded_whole_or_in_the_range_asked() -> None:
    h = history()
    read(h, 20.0, 206, DATA[5:20], ranged=(5, 19))
    assert failures(h) == {}
    read(h, 21.0, 200, DATA[:-1] + b"x")
    assert failures(h) == {"edge bodies byte-exact": 1}


def test_a_404_for_a_url_known_live_fails_unless_something_could_have_ended_it() -> None:
    h = history(deadline=500.0)
    read(h, 20.0, 404)
    assert failures(h) == {"a live URL is never answered 404": 1}

    h = history(deadline=500.0)
    h.touched["file_1"].append(19.0)  # a revoke sent before the read ended
    read(h, 20.0, 404)
    h.unknown["file_1"] = [5.0]
    read(h, 30.0, 404)
    read(h, 499.5, 404)  # within a second of its deadline
    assert failures(h) == {}


def test_a_404_while_the_token_cache_is_being_rebuilt_is_allowed() -> None:
    h = history(deadline=500.0)
    h.blackouts.append((19.0, 25.0))
    read(h, 24.0, 404)
    assert failures(h) == {}
    read(h, 26.0, 404)
    assert failures(h) == {"a live URL is never answered 404": 1}
