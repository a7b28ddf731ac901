from __future__ import annotations

from ingest.chunking import Chunker
from ingest.loaders import LoadedDocument, Section
from pipelines.embedder import SentenceTransformerEmbedder


def _doc(text: str, kind: str = "text", pages: list[str] | None = None) -> LoadedDocument:
    sections = [Section(t, page=i + 1) for i, t in enumerate(pages)] if pages else [Section(text)]
    return LoadedDocument(key="k", source="s", title="t", sections=sections, kind=kind)


def test_no_chunk_exceeds_the_token_budget(embedder: SentenceTransformerEmbedder) -> None:
    chunker = Chunker(embedder.count_tokens, 64, 8)
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(300))
    chunks = chunker.split(_doc(text))
    assert len(chunks) > 5
    assert all(embedder.count_tokens(c.text) <= 64 for c in chunks)


def test_char_spans_point_at_the_chunk_text(embedder: SentenceTransformerEmbedder) -> None:
    chunker = Chunker(embedder.count_tokens, 48, 0)
    pages = ["alpha beta gamma. " * 40, "delta epsilon zeta. " * 40]
    doc = _doc("", pages=pages)
    full = doc.text
    chunks = chunker.split(doc)
    assert {c.page for c in chunks} == {1, 2}
    for c in chunks:
        assert full[c.char_start : c.char_end] == c.text


def test_short_document_is_one_chunk(embedder: SentenceTransformerEmbedder) -> None:
    chunks = Chunker(embedder.count_tokens, 128, 16).split(_doc("  A short note.  "))
    assert [c.text for c in chunks] == ["A short note."]


def test_markdown_is_cut_at_headings(embedder: SentenceTransformerEmbedder) -> None:
    body = "word " * 40
    text = f"# One\n\n{body}\n\n## Two\n\n{body}\n\n## Three\n\n{body}"
    chunks = Chunker(embedder.count_tokens, 60, 0).split(_doc(text, kind="markdown"))
    assert [c.text.splitlines()[0] for c in chunks] == ["# One", "## Two", "## Three"]
