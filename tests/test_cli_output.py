"""The CLI's local side, without servers: the API's text is shown as text (never Rich
markup), and a download never writes through a link or over a file it was not told to."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from rich.console import Console

from cli.files import Target, destination, files_table, open_partial, place, progress_bars

MARKUP_NAMES = ["[/bold].png", "[bold]x[/].png", "[link=http://x]a[/link]", "\\[x]", "[[/]]"]


def rendered(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=300, color_system=None).print(renderable)
    return out.getvalue()


def meta(name: str) -> dict[str, object]:
    return {
        "id": "file_00000000-0000-4000-8000-000000000000",
        "filename": name,
        "bytes": 5,
        "created_at": 0,
        "expires_at": None,
        "public_url": "http://edge/[/t]/x.png",
        "public_url_expires_at": None,
    }


@pytest.mark.parametrize("name", MARKUP_NAMES)
def test_a_table_shows_names_exactly(name: str) -> None:
    shown = rendered(files_table([meta(name)]))
    assert name in shown and "http://edge/[/t]/x.png" in shown


@pytest.mark.parametrize("name", MARKUP_NAMES)
def test_a_progress_bar_shows_its_file_name_exactly(name: str) -> None:
    out = io.StringIO()
    terminal = Console(file=out, force_terminal=True, width=200, color_system=None)
    with progress_bars(Target("http://api", "key", as_json=False), terminal) as bars:
        bars.add_task(name, total=10)
        bars.refresh()
    assert name in out.getvalue()


def test_an_existing_file_is_never_the_destination_without_force(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="use --force"):
        destination(tmp_path / "a.png", meta("x.png"), force=False)
    with pytest.raises(FileExistsError, match="use --force"):
        destination(tmp_path, meta("a.png"), force=False)  # -o DIR: DIR/<name>
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        destination(tmp_path / "dangling", meta("x.png"), force=False)
    assert destination(tmp_path / "a.png", meta("x.png"), force=True) == tmp_path / "a.png"
    assert destination(tmp_path, meta("new.png"), force=False) == tmp_path / "new.png"


@pytest.mark.parametrize("name", ["..", ".", "", "../../etc/passwd", "/abs/x.png"])
def test_the_servers_name_never_leaves_the_chosen_directory(tmp_path: Path, name: str) -> None:
    dest = destination(tmp_path, meta(name), force=False)
    assert dest.parent == tmp_path and dest.name not in ("", ".", "..")


def test_a_planted_symlink_at_the_partial_name_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    part = tmp_path / "copy.png.part"
    part.symlink_to(victim)
    with (
        pytest.raises(FileExistsError, match="remove it or use --force"),
        open_partial(part, False),
    ):
        pass
    assert part.is_symlink() and victim.read_bytes() == b"precious"  # left as it was
    with open_partial(part, True) as out:  # --force: the link goes, not what it points at
        out.write(b"new bytes")
        assert not part.is_symlink()
        assert stat.S_IMODE(part.stat().st_mode) == 0o644 & ~_umask()
    assert victim.read_bytes() == b"precious" and not part.exists()


def test_the_download_lands_under_its_name_only_if_still_free(tmp_path: Path) -> None:
    part, dest = tmp_path / "a.part", tmp_path / "a"
    with open_partial(part, False) as out:
        out.write(b"downloaded")
        out.flush()
        dest.write_bytes(b"appeared meanwhile")
        with pytest.raises(FileExistsError, match="appeared during the download"):
            place(part, dest, force=False)
    assert dest.read_bytes() == b"appeared meanwhile" and not part.exists()
    with open_partial(part, False) as out:
        out.write(b"downloaded")
        out.flush()
        place(part, dest, force=True)
    assert dest.read_bytes() == b"downloaded" and not part.exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
