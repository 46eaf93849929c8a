"""The openai SDK, unchanged, against our REST API: create, list (auto-paging), retrieve,
content, delete, and its error classes."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.conftest import Stack, TeamKey
from tests.helpers import png, readme_snippet, run_snippet

MISSING = "file_00000000-0000-4000-8000-000000000000"


@pytest.fixture
def client(stack: Stack, team: TeamKey) -> Iterator[OpenAI]:
    c = OpenAI(base_url=stack.api_url + "/v1", api_key=team.key)
    yield c
    c.close()


def test_create_retrieve_content_delete(client: OpenAI) -> None:
    data = png(5000)
    created = client.files.create(file=("hello.png", data), purpose="assistants")
    assert created.id.startswith("file_") and created.object == "file"
    assert (created.filename, created.bytes, created.purpose) == ("hello.png", 5000, "assistants")
    assert abs(created.created_at - time.time()) < 10 and created.expires_at is None
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).read() == data
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "file")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_create_from_a_path_with_expires_after(client: OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with path.open("rb") as fh:
        created = client.files.create(
            file=fh, purpose="assistants", expires_after={"anchor": "created_at", "seconds": 3600}
        )
    assert created.filename == "notes.txt" and created.bytes == 5
    assert created.expires_at is not None and created.expires_at - created.created_at == 3600


def test_list_pages_through_everything_once_and_stops(client: OpenAI) -> None:
    made = [client.files.create(file=(f"f{i}.png", png()), purpose="assistants") for i in range(5)]
    other = client.files.create(file=("x.png", png()), purpose="batch")
    # It asks again with after=<last id> until has_more is false; islice guards a loop.
    pages = client.files.list(limit=2, purpose="assistants")
    listed = [f.id for f in itertools.islice(pages, 50)]
    assert listed == [f.id for f in reversed(made)]  # newest first, each once
    assert [p.id for p in itertools.islice(client.files.list(limit=2, order="asc"), 50)] == [
        *(f.id for f in made),
        other.id,
    ]
    first = client.files.list(limit=2)
    assert first.has_more and len(first.data) == 2


def test_errors_raise_the_sdks_classes(stack: Stack, client: OpenAI) -> None:
    stranger = OpenAI(base_url=stack.api_url + "/v1", api_key="fcdn_wrong")
    with stranger, pytest.raises(openai.AuthenticationError) as auth:
        stranger.files.list()
    assert auth.value.status_code == 401 and auth.value.body == "invalid or revoked API key"
    with pytest.raises(openai.NotFoundError) as missing:
        client.files.retrieve(MISSING)
    assert missing.value.body == f"file {MISSING} not found"
    with pytest.raises(openai.BadRequestError) as malformed:
        client.files.content("not-a-file-id")
    assert "malformed file id" in str(malformed.value.body)
    with pytest.raises(openai.BadRequestError) as too_long:
        client.files.create(
            file=("a.png", png()),
            purpose="assistants",
            expires_after={"anchor": "created_at", "seconds": 2592001},
        )
    assert "expires_after" in str(too_long.value.body)
    with pytest.raises(openai.BadRequestError):
        client.files.list(extra_query={"filter": "colour = 'red'"})


async def test_async_client_creates_and_pages(stack: Stack, team: TeamKey) -> None:
    async with AsyncOpenAI(base_url=stack.api_url + "/v1", api_key=team.key) as client:
        blobs = [png(1000 + i) for i in range(3)]
        made = [
            await client.files.create(file=(f"a{i}.png", blob), purpose="assistants")
            for i, blob in enumerate(blobs)
        ]
        listed = [f.id async for f in client.files.list(limit=2)]
        assert listed == [f.id for f in reversed(made)]
        assert (await client.files.content(made[1].id)).read() == blobs[1]


def test_the_readme_openai_snippet_runs_as_shown(
    stack: Stack, team: TeamKey, client: OpenAI, tmp_path: Path
) -> None:
    lines = run_snippet(readme_snippet("from openai import"), stack, team, tmp_path)
    file_id, size, expires_at = lines[0].split()
    assert size == "5" and int(expires_at) > time.time()
    assert lines[1:] == [f"{file_id} notes.txt"]
    with pytest.raises(openai.NotFoundError):  # the snippet deleted it
        client.files.retrieve(file_id)
