"""`filecdn files ...`: the Files API from a terminal, over REST.

Humans get tables and progress bars (on stderr); scripts pass `--json` and get one JSON
document on stdout. Errors are one line on stderr, and the exit code says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from cli.durations import DURATION, format_duration
from cli.rest_client import ApiError, FilesApi, Json

T = TypeVar("T")

DEFAULT_API_URL = "http://127.0.0.1:8000"
EXIT_CODES = """\b
Exit codes:
  0  success
  1  failed: the API refused or was unreachable, or a local file
     could not be written (the reason: one line on stderr)
  2  usage error: a bad option, argument or duration"""


class CommandFailed(Exception):
    """A failure already reported to the user, one line per problem; exit code 1."""


class _FilesGroup(click.Group):
    """API and local I/O failures end as `error: <message>` on stderr with exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            click.echo(f"error: {exc.message}", err=True)
        except OSError as exc:  # a local file: not writable, already there, vanished
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        except CommandFailed:
            pass
        ctx.exit(1)


@click.group(cls=_FilesGroup, epilog=EXIT_CODES)
def files() -> None:
    """Upload, list, download, share and delete files through the REST API.

    The API is $FILECDN_API_URL (default http://127.0.0.1:8000) and the key is
    $XAI_API_KEY; every command also takes --api-url and --api-key.
    """


# --- shared options and output ---------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    api_url: str
    api_key: str | None
    as_json: bool

    def client(self) -> FilesApi:
        if not self.api_key:
            raise ApiError("no API key: set XAI_API_KEY or pass --api-key")
        return FilesApi(self.api_url, self.api_key)


def command(fn: Callable[..., None]) -> Callable[..., None]:
    """A `files` subcommand with --api-url, --api-key and --json, given as `target`."""

    @click.option(
        "--api-url",
        envvar="FILECDN_API_URL",
        default=DEFAULT_API_URL,
        show_default=True,
        help="The REST API (or set FILECDN_API_URL).",
    )
    @click.option("--api-key", envvar="XAI_API_KEY", help="API key (or set XAI_API_KEY).")
    @click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
    @functools.wraps(fn)
    def wrapper(api_url: str, api_key: str | None, as_json: bool, **kwargs: Any) -> None:
        fn(Target(api_url, api_key, as_json), **kwargs)

    cmd = files.command(epilog=EXIT_CODES)(wrapper)
    cmd.params = cmd.params[3:] + cmd.params[:3]  # the command's own options first in --help
    return cmd


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def stdout() -> Console:
    # Piped output keeps whole ids and URLs on one line instead of wrapping at 80 columns.
    console = Console()
    if not console.is_terminal:
        console = Console(width=400, color_system=None)
    return console


def stderr() -> Console:
    return Console(stderr=True)


def when(ts: int | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def when_exactly(ts: int | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def text(value: object) -> Text:
    """A table cell or line that shows exactly what it holds: the API's text (a file named
    `[/bold].png`, say) is never read as Rich markup."""
    return Text(str(value))


def files_table(rows: list[Json], hits: dict[str, int] | None = None) -> Table:
    """Files as rows; with `hits` (file id → the URL's hits), a hits column too."""
    columns = ["id", "name", "size", "created", "expires", "public url"]
    table = Table(*columns, *(["hits"] if hits is not None else []), box=None)
    for f in rows:
        url = f.get("public_url") or ""
        if url and f.get("public_url_expires_at"):
            url += f"  (until {when(f['public_url_expires_at'])})"
        cells: list[Text | str] = [
            text(f["id"]), text(f["filename"]), decimal(f["bytes"]), when(f["created_at"]),
            when(f.get("expires_at")), text(url),
        ]  # fmt: skip
        if hits is not None:
            cells.append(str(hits[f["id"]]) if f["id"] in hits else "")
        table.add_row(*cells)
    return table


def details_table(rows: tuple[tuple[str, str], ...]) -> Table:
    """One thing's fields, a name and a value a line; values are text, never markup."""
    table = Table(show_header=False, box=None)
    for name, value in rows:
        table.add_row(name, text(value))
    return table


@contextlib.contextmanager
def progress_bars(target: Target, console: Console | None = None) -> Iterator[Progress]:
    """Bars on stderr, only for a person at a terminal; each named by its file, as text."""
    console = console or stderr()
    bars = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=target.as_json or not console.is_terminal,
    )
    with bars:
        yield bars


# --- commands --------------------------------------------------------------------------------


@command
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--expires-after", type=DURATION, help="Delete the file after this long (1h..30d).")
@click.option("--purpose", default=None, help="Free-form label, echoed back (openai's field).")
def upload(
    target: Target, paths: tuple[Path, ...], expires_after: int | None, purpose: str | None
) -> None:
    """Upload files, each with its own progress bar."""
    done = run(_upload(target, paths, expires_after, purpose))
    if target.as_json:
        emit_json(done)
    elif done:
        stdout().print(files_table(done))
    if len(done) < len(paths):
        raise CommandFailed


async def _upload(
    target: Target, paths: tuple[Path, ...], expires_after: int | None, purpose: str | None
) -> list[Json]:
    done: list[Json] = []
    async with target.client() as api:
        with progress_bars(target) as bars:
            tasks = [bars.add_task(p.name, total=p.stat().st_size) for p in paths]
            for path, task in zip(paths, tasks, strict=True):
                try:
                    done.append(
                        await api.upload(
                            path,
                            purpose=purpose,
                            expires_after=expires_after,
                            progress=functools.partial(_advance, bars, task),
                        )
                    )
                except ApiError as exc:
                    if exc.status is None or len(paths) == 1:
                        raise  # unreachable API, or nothing else to do: the usual one line
                    bars.console.print(
                        f"error: {path}: {exc.message}",
                        markup=False,
                        highlight=False,
                        soft_wrap=True,
                    )
    return done


def _advance(bars: Progress, task: Any, n: int) -> None:
    bars.advance(task, n)


@command
@click.option("--filter", "filter_", metavar="EXPR", help='AIP-160 filter, e.g. name:"report".')
@click.option("--shared", is_flag=True, help="Only files with a public URL.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many files.")
@click.option("--sort-by", type=click.Choice(["created_at", "filename", "size"]))
@click.option("--order", type=click.Choice(["asc", "desc"]), help="Default: newest first.")
def ls(
    target: Target,
    filter_: str | None,
    shared: bool,
    limit: int | None,
    sort_by: str | None,
    order: str | None,
) -> None:
    """List files (every page, or the first --limit)."""
    if shared:
        filter_ = f"({filter_}) AND public_url != null" if filter_ else "public_url != null"

    async def collect() -> list[Json]:
        async with target.client() as api:
            pages = api.iter_files(limit=limit, filter=filter_, sort_by=sort_by, order=order)
            return [f async for f in pages]

    found = run(collect())
    hits = run(_url_hits(target, found)) if shared else None
    if target.as_json:
        if hits is not None:
            found = [{**f, "public_url_hits": hits.get(f["id"])} for f in found]
        emit_json(found)
    elif found:
        stdout().print(files_table(found, hits))
    else:
        click.echo("no files", err=True)


async def _url_hits(target: Target, found: list[Json]) -> dict[str, int]:
    """Each listed URL's hits (a URL that died since the listing has none)."""
    limit = asyncio.Semaphore(8)

    async def one(api: FilesApi, file_id: str) -> tuple[str, int | None]:
        async with limit:
            try:
                return file_id, (await api.public_url(file_id))["hits"]
            except ApiError as exc:
                if exc.status != 404:
                    raise
                return file_id, None

    async with target.client() as api:
        pairs = await asyncio.gather(*(one(api, f["id"]) for f in found if f.get("public_url")))
    return {file_id: n for file_id, n in pairs if n is not None}


@command
@click.argument("file_id")
def get(target: Target, file_id: str) -> None:
    """Show one file's metadata."""
    f = run(_call(target, lambda api: api.get(file_id)))
    if target.as_json:
        emit_json(f)
        return
    details = (
        ("id", f["id"]),
        ("name", f["filename"]),
        ("size", f"{decimal(f['bytes'])} ({f['bytes']} bytes)"),
        ("purpose", f.get("purpose") or ""),
        ("created", when(f["created_at"])),
        ("expires", when(f.get("expires_at")) or "never"),
        ("public url", f.get("public_url") or ""),
        ("public url expires", when(f.get("public_url_expires_at")) if f.get("public_url") else ""),
    )
    stdout().print(details_table(details))


@command
@click.argument("file_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, allow_dash=True),
    help="Where to write (a file, a directory, or - for stdout). Default: the file's name.",
)
@click.option("--force", is_flag=True, help="Overwrite a file that is already there.")
def download(target: Target, file_id: str, output: Path | None, force: bool) -> None:
    """Download a file's bytes, with a progress bar; never over an existing file unless
    --force."""
    to_stdout = output is not None and str(output) == "-"
    if to_stdout and target.as_json:
        raise click.UsageError("--json and -o - both want stdout; choose one")
    written, dest = run(_download(target, file_id, output, to_stdout, force))
    if target.as_json:
        emit_json({"id": file_id, "path": str(dest), "bytes": written})
    elif not to_stdout:
        click.echo(f"saved {dest} ({decimal(written)})", err=True)


async def _download(
    target: Target, file_id: str, output: Path | None, to_stdout: bool, force: bool
) -> tuple[int, Path | None]:
    async with target.client() as api:
        meta = await api.get(file_id)
        dest = None if to_stdout else destination(output, meta, force)
        with progress_bars(target) as bars:
            task = bars.add_task(meta["filename"], total=meta["bytes"])
            advance = functools.partial(_advance, bars, task)
            if dest is None:
                return await api.download(file_id, sys.stdout.buffer, advance), None
            part = dest.with_name(dest.name + ".part")
            with open_partial(part, force) as out:
                written = await api.download(file_id, out, advance)
                out.flush()
                place(part, dest, force)  # all or nothing: no half-written file under its name
            return written, dest


def _exists(path: Path, hint: str) -> FileExistsError:
    return FileExistsError(errno.EEXIST, f"already exists ({hint})", str(path))


def destination(output: Path | None, meta: Json, force: bool) -> Path:
    """Where the bytes go: -o as given (a directory: the file's name inside it), else the
    file's name here. Never a path from the server, never over a file unless forced."""
    name = Path(meta["filename"]).name
    if name in ("", ".", ".."):
        name = meta["id"]
    if output is None:
        dest, hint = Path(name), "choose where to write with -o, or use --force"
    else:
        dest = output / name if output.is_dir() else output
        hint = "use --force to overwrite it"
    if not force and os.path.lexists(dest):
        raise _exists(dest, hint)
    return dest


_PARTIAL_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def open_partial(part: Path, force: bool) -> Iterator[IO[bytes]]:
    """A new `.part` file, ours alone: created exclusively and never through a link, so a
    planted symlink or another download's partial file is never written to. With --force a
    stale one is removed first (unlink removes a link, not what it points at). Removed
    again unless it was moved into place."""
    if force:
        part.unlink(missing_ok=True)
    try:
        fd = os.open(part, _PARTIAL_FLAGS, 0o644)
    except FileExistsError:
        hint = "a download in progress, or left over: remove it or use --force"
        raise _exists(part, hint) from None
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
    finally:
        part.unlink(missing_ok=True)  # ours: created above; gone already once placed


def place(part: Path, dest: Path, force: bool) -> None:
    """Move the finished download to its name; without --force, only if the name is still
    free (a hard link fails if it exists, where a rename would replace it)."""
    if force:
        os.replace(part, dest)
        return
    try:
        os.link(part, dest, follow_symlinks=False)
    except FileExistsError:
        hint = "it appeared during the download; use --force to overwrite it"
        raise _exists(dest, hint) from None
    except OSError:  # a filesystem without hard links: check, then rename
        if os.path.lexists(dest):
            raise _exists(dest, "use --force to overwrite it") from None
        os.replace(part, dest)
        return
    part.unlink()


@command
@click.argument("file_ids", nargs=-1, required=True)
def rm(target: Target, file_ids: tuple[str, ...]) -> None:
    """Delete files (their public URLs die with them)."""
    deleted, failures = run(_each(target, file_ids, lambda api, i: api.delete(i)))
    if target.as_json:
        emit_json(deleted)
    else:
        for d in deleted:
            click.echo(f"deleted {d['id']}")
    if failures:
        raise CommandFailed


@command
@click.argument("file_id")
@click.option(
    "--expires-after",
    type=DURATION,
    help="The URL dies after this long (1h..30d). Default: with the file, or never.",
)
def share(target: Target, file_id: str, expires_after: int | None) -> None:
    """Create (or return) the file's public URL; prints only the URL."""
    made = run(_call(target, lambda api: api.share(file_id, expires_after)))
    if target.as_json:
        emit_json(made)
        return
    click.echo(made["public_url"])
    if made.get("expires_at") and sys.stderr.isatty():
        left = format_duration(made["expires_at"] - int(datetime.now().timestamp()))
        click.echo(f"expires {when(made['expires_at'])} (in {left})", err=True)


@command
@click.argument("file_id")
def unshare(target: Target, file_id: str) -> None:
    """Revoke the file's public URL at once (the file stays)."""
    result = run(_call(target, lambda api: api.unshare(file_id)))
    if target.as_json:
        emit_json(result)
    elif result["revoked"]:
        click.echo(f"revoked {result['public_url']}")
    else:
        click.echo(f"{file_id} had no public URL")


@command
@click.argument("file_id")
def stats(target: Target, file_id: str) -> None:
    """Show the file's public URL with its hits, bytes sent and last access."""
    u = run(_call(target, lambda api: api.public_url(file_id)))
    if target.as_json:
        emit_json(u)
        return
    details = (
        ("public url", u["public_url"]),
        ("created", when_exactly(u["created_at"])),
        ("expires", when_exactly(u.get("expires_at")) or "never"),
        ("hits", str(u["hits"])),
        ("bytes sent", f"{decimal(u['bytes_sent'])} ({u['bytes_sent']} bytes)"),
        ("last access", when_exactly(u.get("last_accessed_at")) or "never"),
    )
    stdout().print(details_table(details))


@command
@click.argument("file_id")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many events.")
def history(target: Target, file_id: str, limit: int | None) -> None:
    """Show who changed the file and its public URLs, newest first."""

    async def collect() -> list[Json]:
        async with target.client() as api:
            return [e async for e in api.iter_audit_events(file_id, limit)]

    events = run(collect())
    if target.as_json:
        emit_json(events)
        return
    if not events:
        click.echo(f"no history for {file_id}", err=True)
        return
    table = Table("when", "event", "actor", "token", "old expiry", "new expiry", box=None)
    for e in events:
        table.add_row(
            when_exactly(e["created_at"]),
            text(e["kind"]),
            text(_actor(e["actor"])),
            text(f"{e['token_prefix']}…" if e.get("token_prefix") else ""),
            when_exactly(e.get("old_expires_at")),
            when_exactly(e.get("new_expires_at")),
        )
    stdout().print(table)


def _actor(actor: Json) -> str:
    if actor.get("kind") == "api_key":
        return f"{actor.get('name') or ''} (key {actor.get('key_id')})".strip()
    return str(actor.get("name") or actor.get("kind") or "")


# --- helpers ---------------------------------------------------------------------------------


async def _call(target: Target, fn: Callable[[FilesApi], Coroutine[Any, Any, T]]) -> T:
    async with target.client() as api:
        return await fn(api)


async def _each(
    target: Target,
    ids: tuple[str, ...],
    fn: Callable[[FilesApi, str], Coroutine[Any, Any, Json]],
) -> tuple[list[Json], int]:
    """Run fn for every id; report each failure on its own line and carry on."""
    done: list[Json] = []
    failures = 0
    async with target.client() as api:
        for file_id in ids:
            try:
                done.append(await fn(api, file_id))
            except ApiError as exc:
                if exc.status is None:
                    raise
                click.echo(f"error: {file_id}: {exc.message}", err=True)
                failures += 1
    return done, failures
