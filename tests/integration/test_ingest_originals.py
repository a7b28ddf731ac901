"""The ingest job keeps each document's file as it was (not a corpus's lines), copies it again
when it changed or went missing, and removes it with the document a pruning run deletes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ingest.job import build_pipeline
from ingest.pipeline import IngestSummary
from pipelines.core import open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.identity import document_id
from pipelines.settings import Settings
from tests.support.documents import write_pdf

pytestmark = pytest.mark.slow

Ingest = Callable[..., Awaitable[IngestSummary]]


@pytest.fixture
def ingest(embedder: SentenceTransformerEmbedder) -> Callable[[Settings], Ingest]:
    """One CLI-style run (a folder) into "default" over the given settings."""

    def over(settings: Settings) -> Ingest:
        async def run(paths: list[Path], prune: bool = False) -> IngestSummary:
            async with open_core(settings, embedder=embedder) as core:
                return await build_pipeline(core).run(paths, "default", prune=prune)

        return run

    return over


def _write_folder(docs: Path) -> dict[str, Path]:
    docs.mkdir(parents=True)
    (docs / "pump.md").write_text("# Pump\n\nPrime the pump before the first start.\n")
    (docs / "valve.txt").write_text("Valve notes\n\nBleed the air valve once a month.\n")
    write_pdf(docs / "manual.pdf", ["Manual page one: the motor.", "Page two: the seals."])
    lines = [{"_id": "c1", "text": "Corpus line about filters."}]
    (docs / "corpus.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return {p.name: p for p in docs.iterdir()}


def _kept(settings: Settings) -> dict[str, bytes]:
    folder = settings.originals_dir / "default"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def _id(path: Path) -> str:
    return document_id("default", str(path.resolve()))


async def test_a_folder_ingest_keeps_each_files_original_but_no_corpus_line(
    settings: Settings, ingest: Callable[[Settings], Ingest], tmp_path: Path
) -> None:
    files = _write_folder(tmp_path / "docs")
    summary = await ingest(settings)([tmp_path / "docs"])
    assert (summary.added, summary.failed) == (4, [])
    wanted = {_id(files[n]): files[n].read_bytes() for n in ("pump.md", "valve.txt", "manual.pdf")}
    assert _kept(settings) == wanted  # no .jsonl, no half-written copy left beside them


async def test_removing_a_file_from_the_folder_removes_its_original_on_a_pruning_run(
    settings: Settings, ingest: Callable[[Settings], Ingest], tmp_path: Path
) -> None:
    files = _write_folder(tmp_path / "docs")
    await ingest(settings)([tmp_path / "docs"])
    valve = _id(files["valve.txt"])
    assert valve in _kept(settings)
    files["valve.txt"].unlink()
    pruned = await ingest(settings)([tmp_path / "docs"], prune=True)
    assert (pruned.deleted, pruned.unchanged) == (1, 3)
    assert set(_kept(settings)) == {_id(files["pump.md"]), _id(files["manual.pdf"])}


async def test_a_changed_or_missing_original_is_copied_again(
    settings: Settings, ingest: Callable[[Settings], Ingest], tmp_path: Path
) -> None:
    files = _write_folder(tmp_path / "docs")
    run = ingest(settings)
    await run([tmp_path / "docs"])
    pump, valve = _id(files["pump.md"]), _id(files["valve.txt"])
    (settings.originals_dir / "default" / valve).unlink()  # e.g. kept before this existed
    files["pump.md"].write_text("# Pump\n\nPrime the pump and check the oil level.\n")
    again = await run([tmp_path / "docs"])
    assert (again.updated, again.unchanged) == (1, 3)
    kept = _kept(settings)
    assert kept[pump] == files["pump.md"].read_bytes()
    assert kept[valve] == files["valve.txt"].read_bytes()


async def test_with_keep_originals_off_nothing_is_kept(
    make_settings: Callable[..., Settings],
    ingest: Callable[[Settings], Ingest],
    tmp_path: Path,
) -> None:
    settings = make_settings(keep_originals=False)
    _write_folder(tmp_path / "docs")
    assert (await ingest(settings)([tmp_path / "docs"])).added == 4
    assert _kept(settings) == {}
