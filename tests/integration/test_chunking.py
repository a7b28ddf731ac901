"""Chunking measured with the real model's tokenizer: token budgets, character spans, headings."""

from __future__ import annotations

from ingest.chunking import Chunker
from ingest.loaders import LoadedDocument, Section
from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.types import with_heading


def _doc(
    text: str, kind: str = "text", pages: list[str] | None = None, title: str = ""
) -> LoadedDocument:
    sections = [Section(t, page=i + 1) for i, t in enumerate(pages)] if pages else [Section(text)]
    return LoadedDocument(key="k", source="s", title=title, sections=sections, kind=kind)


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


def test_long_titled_document_has_no_bare_title_chunk_and_every_chunk_carries_the_title(
    embedder: SentenceTransformerEmbedder,
) -> None:
    title = "Aspirin and the risk of myocardial infarction"
    body = " ".join(f"Trial {i} enrolled patients over fifty years of age." for i in range(60))
    doc = _doc(f"{title}\n\n{body}", title=title)
    chunks = Chunker(embedder.count_tokens, 128, 8).split(doc)
    assert len(chunks) > 3
    assert all(c.text != title for c in chunks)
    for c in chunks:
        assert c.text.startswith(title) or c.heading == title
        embedded = with_heading(c.heading, c.text)
        assert embedder.count_tokens(embedded) <= 128
        assert doc.text[c.char_start : c.char_end] == c.text


def test_short_document_starting_with_its_title_gets_no_heading(
    embedder: SentenceTransformerEmbedder,
) -> None:
    doc = _doc("Venus\n\nThe surface of Venus is about 465 C.", title="Venus")
    chunks = Chunker(embedder.count_tokens, 128, 16).split(doc)
    assert [(c.text, c.heading) for c in chunks] == [(doc.text, "")]
    other = _doc("The surface of Venus is about 465 C.", title="planets")
    assert [c.heading for c in Chunker(embedder.count_tokens, 128, 16).split(other)] == ["planets"]


def test_a_long_title_is_cut_to_an_eighth_of_the_window(
    embedder: SentenceTransformerEmbedder,
) -> None:
    title = " ".join(f"word{i}" for i in range(100))
    doc = _doc("Some text that does not repeat the title. " * 30, title=title)
    chunks = Chunker(embedder.count_tokens, 128, 0).split(doc)
    assert chunks
    for c in chunks:
        assert c.heading and title.startswith(c.heading)
        assert embedder.count_tokens(c.heading) <= 16
        assert embedder.count_tokens(f"{c.heading}\n\n{c.text}") <= 128
