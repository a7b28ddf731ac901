"""The ingestion job end to end with the real model and the real Qdrant engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from ingest.job import build_pipeline
from ingest.pipeline import IngestSummary
from pipelines.access import FULL_ACCESS, GROUPS_FIELD, Access
from pipelines.core import build_core, open_core
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.errors import InvalidInput
from pipelines.settings import Settings
from pipelines.sparse import QdrantBm25Encoder
from tests.support.documents import CORRUPT_PDF, write_pdf
from tests.support.snapshots import edge_payloads, edge_snapshot, edge_sparse_vectors

pytestmark = pytest.mark.slow


def _write_corpus(root: Path, n: int, version: str = "v1") -> None:
    root.mkdir(parents=True, exist_ok=True)
    topics = ["rivers", "volcanoes", "bridges", "orchids", "comets", "glaciers", "violins"]
    for i in range(n):
        topic = topics[i % len(topics)]
        body = " ".join(
            f"Fact {j} about {topic} number {i} ({version}): {topic} are studied in field {j}."
            for j in range(12)
        )
        (root / f"doc{i:03d}.txt").write_text(f"{topic.title()} note {i}\n\n{body}\n")


Ingest = Callable[..., Awaitable[IngestSummary]]


@pytest.fixture
def ingest(settings: Settings, embedder: SentenceTransformerEmbedder) -> Ingest:
    """One ingest run into "default" over `settings`, its store opened and closed around it."""

    async def run(
        paths: list[Path],
        prune: bool = False,
        state_lookup_max_files: int | None = None,
        groups: Sequence[str] = (),
    ) -> IngestSummary:
        async with open_core(settings, embedder=embedder) as core:
            pipeline = build_pipeline(core)
            if state_lookup_max_files is not None:
                pipeline.state_lookup_max_files = state_lookup_max_files
            return await pipeline.run(paths, "default", prune=prune, groups=groups)

    return run


# What the store holds is read back per file (by source) for small runs, by one full scan for
# runs of many files: both must decide skip / replace alike.
STATE_READS = pytest.mark.parametrize("lookup_max", [None, 0], ids=["by-source", "full-scan"])


@STATE_READS
async def test_reingest_unchanged_files_writes_nothing(
    ingest: Ingest, settings: Settings, tmp_path: Path, lookup_max: int | None
) -> None:
    docs = tmp_path / "docs"
    _write_corpus(docs, 6)
    first = await ingest([docs])
    assert (first.added, first.updated, first.unchanged, first.failed) == (6, 0, 0, [])
    before = edge_snapshot(settings.qdrant_dir / "default")
    second = await ingest([docs], state_lookup_max_files=lookup_max)
    assert (second.added, second.updated, second.unchanged, second.chunks) == (0, 0, 6, 0)
    assert edge_snapshot(settings.qdrant_dir / "default") == before


@STATE_READS
async def test_changed_file_replaces_its_chunks_and_leaves_no_stale_one(
    ingest: Ingest, settings: Settings, tmp_path: Path, lookup_max: int | None
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    long = " ".join(f"Paragraph {i} describes the old pump model in detail." for i in range(150))
    (docs / "manual.md").write_text(f"# Manual\n\n{long}")
    (docs / "other.txt").write_text("An unrelated note about tea.")
    await ingest([docs])
    old = edge_snapshot(settings.qdrant_dir / "default")
    assert len(old) > 3
    (docs / "manual.md").write_text("# Manual\n\nThe new pump model needs no maintenance.")
    summary = await ingest([docs], state_lookup_max_files=lookup_max)
    assert (summary.added, summary.updated, summary.unchanged) == (0, 1, 1)
    new = edge_snapshot(settings.qdrant_dir / "default")
    texts = sorted(v[3] for v in new.values())
    assert texts == [
        "# Manual\n\nThe new pump model needs no maintenance.",
        "An unrelated note about tea.",
    ]


async def test_prune_deletes_documents_whose_files_are_gone(
    ingest: Ingest, settings: Settings, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    _write_corpus(docs, 4)
    await ingest([docs])
    (docs / "doc001.txt").unlink()
    kept = await ingest([docs])  # without --prune nothing is deleted
    assert kept.deleted == 0
    pruned = await ingest([docs], prune=True)
    assert (pruned.deleted, pruned.unchanged) == (1, 3)
    doc_ids = {v[0] for v in edge_snapshot(settings.qdrant_dir / "default").values()}
    assert len(doc_ids) == 3


async def test_bad_files_are_reported_and_the_rest_lands(
    ingest: Ingest, settings: Settings, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nThis document is fine.")
    (docs / "broken.pdf").write_bytes(CORRUPT_PDF)
    (docs / "photo.txt").write_bytes(bytes(range(256)) * 64)
    (docs / "latin1.txt").write_bytes("na\xefve caf\xe9".encode("latin-1"))
    (docs / "empty.md").write_text("")
    summary = await ingest([docs, tmp_path / "missing.txt"])
    reasons = {Path(f["source"]).name: f["reason"] for f in summary.failed}
    assert set(reasons) == {"broken.pdf", "photo.txt", "latin1.txt", "empty.md", "missing.txt"}
    assert "PDF" in reasons["broken.pdf"]
    assert "binary" in reasons["photo.txt"]
    assert "UTF-8" in reasons["latin1.txt"]
    assert "empty" in reasons["empty.md"]
    assert summary.added == 1


async def test_real_pdf_and_docx_carry_pages_and_titles(
    ingest: Ingest, settings: Settings, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    import docx

    docs = tmp_path / "docs"
    docs.mkdir()
    d = docx.Document()
    d.add_heading("Router setup", level=1)
    d.add_paragraph("Hold the reset button for ten seconds to restore factory settings.")
    d.save(str(docs / "router.docx"))
    write_pdf(
        docs / "animals.pdf", ["Page one talks about llamas.", "Page two talks about alpacas."]
    )
    summary = await ingest([docs])
    assert summary.failed == []
    assert summary.added == 2
    snap = edge_snapshot(settings.qdrant_dir / "default")
    texts = sorted(v[3] for v in snap.values())
    assert any("alpacas" in t for t in texts)
    assert any("reset button" in t for t in texts)
    async with open_core(settings, embedder=embedder) as core:
        hits = await core.store.search(
            "default",
            dense=embedder.embed_queries(["alpacas"])[0],
            sparse=None,
            k=1,
            mode="dense",
            filters={"page": 2},
            access=FULL_ACCESS,
        )
    assert hits[0].payload["title"] == "animals"
    assert "alpacas" in hits[0].text


def _cli(args: list[str], data_dir: Path, **kw: object) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(data_dir),
        "RAG_CHUNKING__CHUNK_TOKENS": "48",
        "RAG_EMBEDDING__BATCH_SIZE": "8",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )  # type: ignore[call-overload]


def _ingest(docs: Path, data_dir: Path) -> dict[str, object]:
    proc = _cli(["ingest", str(docs), "--json", "--prune"], data_dir)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    result: dict[str, object] = json.loads(out)
    return result


def _kill_after_first_upsert(docs: Path, data_dir: Path) -> None:
    proc = _cli(["ingest", str(docs), "--json", "-v"], data_dir)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "upserted" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"


def test_ingest_killed_mid_run_converges_on_rerun(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _write_corpus(docs, 60)
    # A clean run of v2 is the reference.
    clean = tmp_path / "clean"
    _ingest(docs, clean)
    _write_corpus(docs, 60, version="v2")
    (docs / "doc007.txt").unlink()
    _ingest(docs, clean)
    reference = edge_snapshot(clean / "qdrant" / "default")

    # The same history, with a SIGKILL in the middle of each run.
    _write_corpus(docs, 60)  # restores doc007 too
    killed = tmp_path / "killed"
    _kill_after_first_upsert(docs, killed)
    _ingest(docs, killed)
    _write_corpus(docs, 60, version="v2")
    (docs / "doc007.txt").unlink()
    _kill_after_first_upsert(docs, killed)
    summary = _ingest(docs, killed)
    assert summary["failed"] == []
    assert edge_snapshot(killed / "qdrant" / "default") == reference


async def test_a_folder_without_documents_changes_nothing(
    ingest: Ingest, settings: Settings, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    _write_corpus(docs, 2)
    await ingest([docs])
    before = edge_snapshot(settings.qdrant_dir / "default")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "image.png").write_bytes(b"\x89PNG")  # not a supported type
    summary = await ingest([tmp_path / "empty"])
    assert (summary.files, summary.added, summary.unchanged, summary.failed) == (0, 0, 0, [])
    assert edge_snapshot(settings.qdrant_dir / "default") == before


async def test_ingest_while_another_process_holds_the_store_says_what_to_do(
    ingest: Ingest, settings: Settings, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    _write_corpus(docs, 1)
    await ingest([docs])
    holder = build_core(settings, embedder=embedder)
    await holder.store.ensure_collection("default", create=False)  # like a running `rag serve`
    try:
        proc = _cli(["ingest", str(docs)], settings.data_dir)
        out, err = proc.communicate(timeout=300)
    finally:
        await holder.close()
    assert proc.returncode == 2, (out, err)
    message = " ".join((out + err).split())
    assert "collection 'default'" in message and "is open in another process" in message
    assert "POST /v1/collections/default/documents" in message
    assert "Traceback" not in err


async def test_ingest_writes_bm25_vectors_with_the_configured_parameters(
    make_settings: Callable[..., Settings], embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    settings = make_settings(retrieval={"bm25_k1": 1.3, "bm25_avg_len": 64})
    text = "# Pump care\n\nThe pump needs oil every month, and the pump filter every year."
    (tmp_path / "pump.md").write_text(text)
    async with open_core(settings, embedder=embedder) as core:
        assert isinstance(core.sparse, QdrantBm25Encoder)
        assert (core.sparse.k1, core.sparse.avg_len) == (1.3, 64)
        await build_pipeline(core).run([tmp_path / "pump.md"], "default")
    stored = edge_sparse_vectors(settings.qdrant_dir / "default")
    configured, default = (
        encoder.encode_documents([text])[0] for encoder in (core.sparse, QdrantBm25Encoder())
    )
    assert stored == {text: dict(zip(configured.indices, configured.values, strict=True))}
    assert stored[text] != dict(zip(default.indices, default.values, strict=True))


def _write_tree(docs: Path) -> None:
    """A folder with a subfolder and a corpus: display names 'guides/...', 'corpus.jsonl'."""
    (docs / "guides").mkdir(parents=True)
    (docs / "overview.md").write_text("# Overview\n\nThe harbour ferry leaves at dawn.")
    (docs / "guides" / "install.md").write_text("# Install\n\nUnpack the kiln before firing.")
    (docs / "guides" / "tuning.txt").write_text("Tuning the cello takes patience and a fork.")
    rows = [{"_id": "q1", "text": "Glaciers carve fjords."}, {"_id": "q2", "text": "Owls hunt."}]
    (docs / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _files(docs: Path) -> list[Path]:
    return [p for p in docs.rglob("*") if p.is_file()]


EXPECTED_SOURCES = {"overview.md", "guides/install.md", "guides/tuning.txt", "corpus.jsonl"}


@STATE_READS
async def test_cli_ingested_folder_shows_sources_relative_to_its_root(
    ingest: Ingest,
    settings: Settings,
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
    lookup_max: int | None,
) -> None:
    docs = tmp_path / "docs"
    _write_tree(docs)
    first = await ingest([docs])
    assert (first.added, first.failed) == (5, [])
    shard = settings.qdrant_dir / "default"
    stored = edge_payloads(shard)
    assert {p["source"] for p in stored.values()} == EXPECTED_SOURCES
    # The real path is kept (for the job's own lookups and prune), never as the source.
    assert {p["path"] for p in stored.values()} == {str(f.resolve()) for f in _files(docs)}
    async with open_core(settings, embedder=embedder) as core:
        hits = await core.store.search(
            "default",
            dense=embedder.embed_queries(["kiln"])[0],
            sparse=None,
            k=10,
            mode="dense",
            filters={"source": "guides/install.md"},
            access=FULL_ACCESS,
        )
        assert [h.payload["source"] for h in hits] == ["guides/install.md"]
        listed = await core.store.document_states("default", access=FULL_ACCESS)
    assert sorted(st.source for st in listed.values()) == sorted(
        [*EXPECTED_SOURCES, "corpus.jsonl"]
    )
    again = await ingest([docs], state_lookup_max_files=lookup_max)
    assert (again.added, again.updated, again.unchanged, again.chunks) == (0, 0, 5, 0)
    assert edge_payloads(shard) == stored

    (docs / "guides" / "install.md").unlink()
    pruned = await ingest([docs], prune=True)
    assert (pruned.deleted, pruned.unchanged) == (1, 4)
    left = edge_payloads(shard)
    assert {p["source"] for p in left.values()} == EXPECTED_SOURCES - {"guides/install.md"}

    # A file given by its own path: its file name.
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "note.md").write_text("# Note\n\nThe lighthouse keeper sleeps.")
    assert (await ingest([tmp_path / "single" / "note.md"])).added == 1
    assert "note.md" in {p["source"] for p in edge_payloads(shard).values()}


async def test_collection_with_absolute_sources_is_rewritten_once_without_duplicates(
    ingest: Ingest, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ingest.pipeline as pipeline_module
    from pipelines.types import Chunk

    docs = tmp_path / "docs"
    _write_tree(docs)
    shard = settings.qdrant_dir / "default"
    # An older collection: every source the file's absolute path, and no `path` field.
    with monkeypatch.context() as m:
        discover_named = pipeline_module.discover_named

        def absolute_names(paths: list[Path]) -> object:
            files, _, missing = discover_named(paths)
            return files, {str(f): str(f) for f in files}, missing

        payload = Chunk.payload
        m.setattr(pipeline_module, "discover_named", absolute_names)
        m.setattr(
            Chunk, "payload", lambda self: {k: v for k, v in payload(self).items() if k != "path"}
        )
        old = await ingest([docs])
    assert old.added == 5
    before = edge_payloads(shard)
    assert all(Path(p["source"]).is_absolute() and "path" not in p for p in before.values())

    rewritten = await ingest([docs])
    assert (rewritten.added, rewritten.updated, rewritten.failed) == (0, 5, [])
    after = edge_payloads(shard)
    assert set(after) == set(before)  # the same points (ids): no duplicates
    assert {p["doc_id"] for p in after.values()} == {p["doc_id"] for p in before.values()}
    assert {p["source"] for p in after.values()} == EXPECTED_SOURCES
    assert all(p["path"] == before[cid]["source"] for cid, p in after.items())

    settled = await ingest([docs])  # once: the next run writes nothing
    assert (settled.unchanged, settled.chunks) == (5, 0)
    assert edge_payloads(shard) == after


# -- access lists (groups) at ingest -------------------------------------------------------


def _groups_by_doc(shard: Path) -> dict[str, set[tuple[str, ...]]]:
    """doc_id -> the distinct access lists its chunks carry, read from the engine."""
    out: dict[str, set[tuple[str, ...]]] = {}
    for p in edge_payloads(shard).values():
        out.setdefault(p["doc_id"], set()).add(tuple(p[GROUPS_FIELD]))
    return out


def _write_manual(docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    long = " ".join(f"Paragraph {i} describes the payroll calendar in detail." for i in range(150))
    (docs / "payroll.md").write_text(f"# Payroll\n\n{long}")
    (docs / "tea.txt").write_text("An unrelated note about tea.")


async def _readers_of(
    settings: Settings, embedder: SentenceTransformerEmbedder, source: str
) -> dict[str, int]:
    """How many chunks of `source` each caller finds, searching for them at once."""
    found: dict[str, int] = {}
    async with open_core(settings, embedder=embedder) as core:
        for name, access in {
            "hr": Access(groups=frozenset({"hr"})),
            "finance": Access(groups=frozenset({"finance"})),
            "none": Access(groups=frozenset()),
            "all": FULL_ACCESS,
        }.items():
            hits = await core.retrieval.search(
                "payroll calendar", "default", access=access, k=50, mode="hybrid"
            )
            found[name] = sum(1 for h in hits if h.payload["source"] == source)
    return found


async def test_run_groups_land_sorted_on_every_chunk(
    ingest: Ingest, settings: Settings, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    _write_manual(docs)
    summary = await ingest([docs], groups=["hr", "finance", "hr"])
    assert (summary.added, summary.failed) == (2, [])
    stored = edge_payloads(settings.qdrant_dir / "default")
    assert len(stored) > 3
    assert {tuple(p[GROUPS_FIELD]) for p in stored.values()} == {("finance", "hr")}


async def test_a_run_without_groups_stores_public_chunks(
    ingest: Ingest, settings: Settings, tmp_path: Path
) -> None:
    _write_manual(tmp_path / "docs")
    await ingest([tmp_path / "docs"])
    stored = edge_payloads(settings.qdrant_dir / "default")
    assert {tuple(p[GROUPS_FIELD]) for p in stored.values()} == {()}


async def test_a_bad_run_group_is_refused_before_anything_is_read(
    ingest: Ingest, settings: Settings, tmp_path: Path
) -> None:
    _write_manual(tmp_path / "docs")
    for bad in ("hr finance", "../x", "-hr", "", "x" * 65, "hr\n"):
        with pytest.raises(InvalidInput, match="invalid group"):
            await ingest([tmp_path / "docs"], groups=[bad])
    assert not (settings.qdrant_dir / "default").exists()


async def test_corpus_lines_carry_their_own_groups_over_the_runs(
    ingest: Ingest, settings: Settings, tmp_path: Path
) -> None:
    rows: list[dict[str, object]] = [
        {"_id": "listed", "text": "Listed groups.", "groups": ["legal", "finance"]},
        {"_id": "string", "text": "Comma-separated groups.", "groups": "hr, legal,"},
        {"_id": "public", "text": "An explicitly public line.", "groups": []},
        {"_id": "inherits", "text": "The run's groups."},
        {"_id": "bad-name", "text": "A bad group name.", "groups": ["ok", "not ok"]},
        {"_id": "bad-type", "text": "Groups of the wrong type.", "groups": 7},
    ]
    corpus = tmp_path / "docs" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = await ingest([corpus.parent], groups=["ops"])
    assert summary.added == 4
    failed = {f["source"]: f["reason"] for f in summary.failed}
    assert set(failed) == {"corpus.jsonl:5", "corpus.jsonl:6"}
    assert "invalid group 'not ok'" in failed["corpus.jsonl:5"]
    assert "list of group names or a comma-separated string" in failed["corpus.jsonl:6"]
    by_line = {
        p["external_id"]: tuple(p[GROUPS_FIELD])
        for p in edge_payloads(settings.qdrant_dir / "default").values()
    }
    assert by_line == {
        "listed": ("finance", "legal"),
        "string": ("hr", "legal"),
        "public": (),
        "inherits": ("ops",),
    }


@STATE_READS
async def test_reingest_with_other_groups_moves_every_chunk_at_once_without_embedding(
    ingest: Ingest,
    settings: Settings,
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
    lookup_max: int | None,
) -> None:
    docs = tmp_path / "docs"
    _write_manual(docs)
    await ingest([docs], groups=["hr"])
    shard = settings.qdrant_dir / "default"
    before = edge_snapshot(shard)
    readers = await _readers_of(settings, embedder, "payroll.md")
    chunks = readers["all"]
    assert chunks > 3 and readers == {"hr": chunks, "finance": 0, "none": 0, "all": chunks}

    moved = await ingest([docs], groups=["finance"], state_lookup_max_files=lookup_max)
    assert (moved.added, moved.updated, moved.unchanged, moved.chunks) == (0, 2, 0, 0)
    assert set().union(*_groups_by_doc(shard).values()) == {("finance",)}
    assert edge_snapshot(shard) == before  # the same chunks, texts and hashes: not rewritten
    readers = await _readers_of(settings, embedder, "payroll.md")
    assert readers == {"hr": 0, "finance": chunks, "none": 0, "all": chunks}

    public = await ingest([docs], state_lookup_max_files=lookup_max)
    assert (public.updated, public.chunks) == (2, 0)
    readers = await _readers_of(settings, embedder, "payroll.md")
    assert readers == {"hr": chunks, "finance": chunks, "none": chunks, "all": chunks}


@STATE_READS
async def test_reingest_with_the_same_groups_writes_nothing(
    ingest: Ingest, settings: Settings, tmp_path: Path, lookup_max: int | None
) -> None:
    docs = tmp_path / "docs"
    _write_manual(docs)
    await ingest([docs], groups=["finance", "hr"])
    stored = edge_payloads(settings.qdrant_dir / "default")
    again = await ingest([docs], groups=["hr", "finance"], state_lookup_max_files=lookup_max)
    assert (again.added, again.updated, again.unchanged, again.chunks) == (0, 0, 2, 0)
    assert edge_payloads(settings.qdrant_dir / "default") == stored  # ingested_at included


async def test_changed_text_and_groups_replace_the_document_under_its_new_groups(
    ingest: Ingest, settings: Settings, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    _write_manual(docs)
    await ingest([docs], groups=["hr"])
    (docs / "payroll.md").write_text("# Payroll\n\nPayroll runs on the last Friday.")
    summary = await ingest([docs], groups=["finance"])
    assert (summary.updated, summary.unchanged) == (2, 0)
    assert set().union(*_groups_by_doc(settings.qdrant_dir / "default").values()) == {("finance",)}


def test_cli_ingest_groups_option_labels_every_chunk(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _write_manual(docs)
    data = tmp_path / "data"
    proc = _cli(["ingest", str(docs), "--groups", "hr, finance", "--json"], data)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out)["added"] == 2
    stored = edge_payloads(data / "qdrant" / "default")
    assert {tuple(p[GROUPS_FIELD]) for p in stored.values()} == {("finance", "hr")}

    bad = _cli(["ingest", str(docs), "--groups", "hr,pay roll"], tmp_path / "other")
    out, err = bad.communicate(timeout=300)
    assert bad.returncode == 2, (out, err)
    assert "--groups: invalid group 'pay roll'" in " ".join((out + err).split())
    assert not (tmp_path / "other" / "qdrant" / "default").exists()
