"""The CLI's small promises: `rag --version`, help text on every option of every command, a
folder ingest that names the file types it skipped, and `rag collections delete` (asks first,
`--yes` does not; refused while a running service holds the embedded store)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import pytest
import typer
from typer.testing import CliRunner, Result

from app.cli import app
from pipelines.core import build_core, open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import Settings
from tests.support.seeds import ingest_samples


@pytest.fixture
def rag(settings: Settings) -> Any:
    """`rag …` in-process over the test's data dir."""
    runner = CliRunner()
    env = {"RAG_DATA_DIR": str(settings.data_dir), "RAG_DEFAULT_COLLECTION": None}

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), env=env, input=input, catch_exceptions=False)

    return invoke


def test_version_prints_the_package_version(rag: Any) -> None:
    result = rag("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ragserve {version('ragserve')}"


def _commands(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_option_and_argument_of_every_command_has_help() -> None:
    root = typer.main.get_command(app)
    commands = dict(_commands(root, ("rag",)))
    assert ("rag", "collections", "delete") in commands
    blank = [
        f"{' '.join(path)} {'/'.join(param.opts)}"
        for path, command in commands.items()
        for param in command.params
        if not getattr(param, "help", None)
    ]
    assert not blank, f"options without help text: {blank}"


def test_folder_ingest_names_the_types_it_skipped(rag: Any, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "guide.md").write_text("# Guide\n\nGrind fine, nine bar, twenty-five seconds.\n")
    (docs / "prices.csv").write_text("a,b\n1,2\n")
    (docs / "sub" / "more.csv").write_text("c\n3\n")
    (docs / "deck.pptx").write_bytes(b"PK\x03\x04")
    (docs / ".hidden.csv").write_text("not counted\n")  # hidden: not a document to anyone

    text = rag("ingest", str(docs))
    assert text.exit_code == 0, text.output
    said = " ".join(text.stderr.split())
    assert "1 added" in said
    assert "skipped: 2 .csv, 1 .pptx (not a supported type:" in said

    as_json = rag("ingest", str(docs), "--json")
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.stdout)
    assert summary["skipped"] == {".csv": 2, ".pptx": 1}
    assert summary["unchanged"] == 1


@pytest.fixture
async def seeded(settings: Settings, embedder: SentenceTransformerEmbedder) -> None:
    """`default` (the samples) and `keep`, written and closed, as `rag ingest` leaves them."""
    async with open_core(settings, embedder=embedder) as core:
        await ingest_samples(core)
        await ingest_samples(core, "keep")


def _collections(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.qdrant_dir.iterdir() if p.is_dir())


@pytest.mark.usefixtures("seeded")
def test_delete_asks_first_and_no_keeps_the_collection(rag: Any, settings: Settings) -> None:
    result = rag("collections", "delete", "default", input="n\n")
    assert result.exit_code == 1, result.output
    assert "Delete collection 'default' (3 documents, 4 chunks)?" in result.stderr
    assert "not deleted" in result.stderr
    assert _collections(settings) == ["default", "keep"]

    result = rag("collections", "delete", "default", input="y\n")
    assert result.exit_code == 0, result.output
    assert "deleted collection default" in result.stderr
    assert _collections(settings) == ["keep"]


@pytest.mark.usefixtures("seeded")
def test_delete_with_yes_does_not_ask(rag: Any, settings: Settings) -> None:
    result = rag("collections", "delete", "keep", "--yes")
    assert result.exit_code == 0, result.output
    assert "Delete collection" not in result.output
    assert _collections(settings) == ["default"]
    stats = rag("stats", "--json")
    assert [c["name"] for c in json.loads(stats.stdout)["collections"]] == ["default"]


@pytest.mark.usefixtures("seeded")
def test_delete_of_an_unknown_collection_is_an_error(rag: Any, settings: Settings) -> None:
    result = rag("collections", "delete", "nosuch", "--yes")
    assert result.exit_code == 2, result.output
    assert "collection 'nosuch' does not exist" in " ".join(result.stderr.split())
    assert _collections(settings) == ["default", "keep"]


@pytest.mark.usefixtures("seeded")
async def test_delete_while_a_service_holds_the_store_refuses(
    rag: Any, settings: Settings, embedder: SentenceTransformerEmbedder
) -> None:
    holder = build_core(settings, embedder=embedder)
    await holder.store.ensure_collection("default", create=False)  # like a running `rag serve`
    try:  # the command runs its own event loop: off this test's
        result = await anyio.to_thread.run_sync(rag, "collections", "delete", "default", "--yes")
    finally:
        await holder.close()
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert "held by a running service" in said
    assert "DELETE http://" in said and "/v1/collections/default" in said
    assert _collections(settings) == ["default", "keep"]
