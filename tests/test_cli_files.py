"""`filecdn files ...` end to end: the real command in a subprocess, against the real stack,
as a script would use it (--json, exit codes, one-line errors) and as a person would."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from cli.durations import format_duration, parse_duration
from cli.embedded import free_port
from tests.conftest import Stack
from tests.helpers import Cli, fetch_sync, one_line_error, png, upload

MISSING = "file_00000000-0000-4000-8000-000000000000"


def test_a_files_whole_life_from_the_terminal(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "cover.png").write_bytes(image := png(300_000))
    (tmp_path / "notes.txt").write_text("hello")
    up = cli.json("upload", "cover.png", "notes.txt", "--expires-after", "1d", "--purpose", "p")
    cover, notes = up
    assert (cover["filename"], cover["bytes"], cover["purpose"]) == ("cover.png", len(image), "p")
    assert cover["expires_at"] - cover["created_at"] == 86400
    assert [f["id"] for f in cli.json("ls")] == [notes["id"], cover["id"]]
    assert cli.json("ls", "--shared") == []

    shared = cli("share", cover["id"], "--expires-after", "2h")
    assert shared.returncode == 0 and shared.stdout.count("\n") == 1  # only the URL
    url = shared.stdout.strip()
    assert fetch_sync(url) == (200, image)
    assert [f["id"] for f in cli.json("ls", "--shared")] == [cover["id"]]
    assert [f["id"] for f in cli.json("ls", "--filter", 'name:"NOTES"')] == [notes["id"]]
    got = cli.json("get", cover["id"])
    assert got["public_url"] == url
    assert abs(got["public_url_expires_at"] - (time.time() + 7200)) < 10

    assert cli.json("download", cover["id"], "-o", "copy.png")["bytes"] == len(image)
    assert (tmp_path / "copy.png").read_bytes() == image
    (tmp_path / "out").mkdir()
    cli.json("download", notes["id"], "-o", "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "hello"
    assert cli.bytes_out("download", notes["id"], "-o", "-") == b"hello"

    assert cli("unshare", cover["id"]).stdout == f"revoked {url}\n"
    assert cli("unshare", cover["id"]).stdout == f"{cover['id']} had no public URL\n"
    assert fetch_sync(url)[0] == 404

    assert cli("rm", cover["id"], notes["id"]).stdout.splitlines() == [
        f"deleted {cover['id']}",
        f"deleted {notes['id']}",
    ]
    assert one_line_error(cli("get", cover["id"])) == f"file {cover['id']} not found"


def test_people_get_tables_and_a_default_download_name(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "report.pdf").write_bytes(b"%PDF-1.7\n" + b"x" * 2000)
    done = cli("upload", "src/report.pdf")
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()[:2]
    assert header.split()[:4] == ["id", "name", "size", "created"]
    file_id = row.split()[0]
    assert row.split()[1:3] == ["report.pdf", "2.0"]  # 2.0 kB
    listed = cli("ls").stdout
    assert file_id in listed and "report.pdf" in listed
    assert "report.pdf" in cli("get", file_id).stdout
    saved = cli("download", file_id)
    assert saved.returncode == 0 and saved.stderr.startswith("saved report.pdf")
    assert (tmp_path / "report.pdf").read_bytes() == (tmp_path / "src" / "report.pdf").read_bytes()
    # Never overwrite a file the user did not name.
    assert one_line_error(cli("download", file_id)).startswith("report.pdf: already exists")


async def test_ls_follows_pages_and_honours_limit_sort_and_order(
    cli: Cli, api: aiohttp.ClientSession
) -> None:
    made = await asyncio.gather(*(upload(api, png(1000 + i), f"f{i:03}.png") for i in range(103)))
    everything = await asyncio.to_thread(cli.json, "ls")
    assert len(everything) == 103 and {f["id"] for f in everything} == {f["id"] for f in made}
    biggest = await asyncio.to_thread(cli.json, "ls", "--limit", "3", "--sort-by", "size")
    assert [f["bytes"] for f in biggest] == [1102, 1101, 1100]  # newest/biggest first
    smallest = await asyncio.to_thread(
        cli.json, "ls", "--limit", "102", "--sort-by", "filename", "--order", "asc"
    )
    assert [f["filename"] for f in smallest] == [f"f{i:03}.png" for i in range(102)]


def test_missing_key_is_exit_1_with_one_line(cli: Cli) -> None:
    msg = one_line_error(cli("ls", XAI_API_KEY=""))
    assert msg == "no API key: set XAI_API_KEY or pass --api-key"


def test_wrong_key_is_exit_1_with_the_apis_message(cli: Cli) -> None:
    assert one_line_error(cli("ls", "--api-key", "fcdn_wrong")) == "invalid or revoked API key"


def test_unreachable_api_is_exit_1_with_one_line(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert one_line_error(cli("ls", FILECDN_API_URL=url)).startswith(
        f"cannot reach the API at {url}"
    )


def test_usage_errors_are_exit_2(cli: Cli) -> None:
    bad = cli("share", MISSING, "--expires-after", "3x")
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    assert cli("upload", "no-such-file.png").returncode == 2
    assert cli("ls", "--limit", "0").returncode == 2
    assert cli("frobnicate").returncode == 2
    both = cli("download", MISSING, "-o", "-", "--json")
    assert both.returncode == 2 and "stdout" in both.stderr


def test_api_refusals_are_exit_1_with_the_apis_message(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("text")
    [text] = cli.json("upload", "a.txt")
    assert "only PNG, JPEG, MP4 and PDF" in one_line_error(cli("share", text["id"]))
    assert "expires_after must be between" in one_line_error(
        cli("share", text["id"], "--expires-after", "31d")
    )
    assert one_line_error(cli("ls", "--filter", "colour = 1")).startswith("invalid filter")


def test_rm_deletes_what_it_can_and_reports_each_failure(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png())
    [f] = cli.json("upload", "a.png")
    done = cli("rm", MISSING, f["id"])
    assert done.returncode == 1
    assert done.stdout == f"deleted {f['id']}\n"
    assert done.stderr == f"error: {MISSING}: file {MISSING} not found\n"


def test_upload_goes_on_after_a_refused_file(cli: Cli, tmp_path: Path, stack: Stack) -> None:
    with (tmp_path / "huge.bin").open("wb") as fh:
        fh.truncate(stack.settings.max_upload_bytes + 1)  # sparse: quick to make
    (tmp_path / "ok.png").write_bytes(png())
    done = cli("upload", "huge.bin", "ok.png", "--json")
    assert done.returncode == 1
    assert [f["filename"] for f in json.loads(done.stdout)] == ["ok.png"]
    assert done.stderr.startswith("error: huge.bin: file exceeds the maximum upload size")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("7d", 604800),
        ("1d12h", 129600),
        ("2w", 1209600),
        ("3600", 3600),
        (" 1H 30M ", 5400),
    ],
)
def test_durations_read_like_people_write_them(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "1.5h", "-1h", "1h-", "d1"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_durations_format_back() -> None:
    assert [format_duration(s) for s in (0, 59, 3600, 129600, 1209601)] == [
        "0s",
        "59s",
        "1h",
        "1d12h",
        "2w1s",
    ]


async def test_names_that_look_like_markup_are_shown_as_text(
    cli: Cli, api: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A file named `[/bold].png` once crashed `files ls` for its whole team."""
    f = await upload(api, png(), "[/bold].png")
    listed = await asyncio.to_thread(cli, "ls")
    assert listed.returncode == 0, listed.stderr
    assert f"{f['id']}  [/bold].png" in listed.stdout
    got = await asyncio.to_thread(cli, "get", f["id"])
    assert got.returncode == 0 and "[/bold].png" in got.stdout
    saved = await asyncio.to_thread(cli, "download", f["id"])
    assert saved.returncode == 0, saved.stderr
    assert saved.stderr.startswith("saved bold].png")  # the last segment: never a path
    assert (tmp_path / "bold].png").exists()


def test_download_never_overwrites_without_force(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(image := png())
    [f] = cli.json("upload", "a.png")
    (tmp_path / "copy.png").write_bytes(b"mine")
    refused = one_line_error(cli("download", f["id"], "-o", "copy.png"))
    assert refused == "copy.png: already exists (use --force to overwrite it)"
    assert (tmp_path / "copy.png").read_bytes() == b"mine"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"mine too")
    assert "already exists" in one_line_error(cli("download", f["id"], "-o", "out"))
    assert (tmp_path / "out" / "a.png").read_bytes() == b"mine too"
    assert cli.json("download", f["id"], "-o", "copy.png", "--force")["bytes"] == len(image)
    assert (tmp_path / "copy.png").read_bytes() == image
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "copy.png", "out"]


def test_download_never_follows_a_planted_link(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(image := png())
    [f] = cli.json("upload", "a.png")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "copy.png.part").symlink_to(victim)
    refused = one_line_error(cli("download", f["id"], "-o", "copy.png"))
    assert refused.startswith("copy.png.part: already exists")
    assert victim.read_bytes() == b"precious" and not (tmp_path / "copy.png").exists()
    # --force removes the link itself, then writes a file of its own.
    cli.json("download", f["id"], "-o", "copy.png", "--force")
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "copy.png").read_bytes() == image
    assert not (tmp_path / "copy.png.part").exists()
    # A link planted at the final name is replaced by the file, never written through.
    (tmp_path / "linked.png").symlink_to(victim)
    assert "already exists" in one_line_error(cli("download", f["id"], "-o", "linked.png"))
    cli.json("download", f["id"], "-o", "linked.png", "--force")
    assert not (tmp_path / "linked.png").is_symlink()
    assert (tmp_path / "linked.png").read_bytes() == image and victim.read_bytes() == b"precious"
