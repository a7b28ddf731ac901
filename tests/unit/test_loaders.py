"""Loading files into documents: discovery, the text, HTML, PDF and JSONL loaders, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.loaders import LoadError, LoadFailure, discover, load_file


def _load(path: Path) -> list:  # type: ignore[type-arg]
    failures: list[LoadFailure] = []
    return list(load_file(path, failures))


def test_binary_renamed_txt_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "image.txt"
    p.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(LoadError, match="binary"):
        _load(p)


def test_undecodable_text_names_the_byte(tmp_path: Path) -> None:
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9 au lait, cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    with pytest.raises(LoadError, match=r"not valid UTF-8.*byte 3"):
        _load(p)


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "empty.md"
    p.write_text("  \n")
    with pytest.raises(LoadError, match="empty"):
        _load(p)


def test_corrupt_pdf_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "broken.pdf"
    p.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    with pytest.raises(LoadError, match="PDF"):
        _load(p)


def test_markdown_title_is_first_heading(tmp_path: Path) -> None:
    p = tmp_path / "guide.md"
    p.write_text("intro\n\n# Real Title\n\nbody text")
    (doc,) = _load(p)
    assert doc.title == "Real Title"
    assert doc.kind == "markdown"


def test_html_drops_scripts_and_keeps_headings(tmp_path: Path) -> None:
    p = tmp_path / "page.html"
    p.write_text(
        "<html><head><title>T</title><script>var x=1;</script></head>"
        "<body><h2>Section</h2><p>Hello world</p></body></html>"
    )
    (doc,) = _load(p)
    assert doc.title == "T"
    assert "## Section" in doc.text
    assert "Hello world" in doc.text
    assert "var x" not in doc.text


def test_jsonl_bad_lines_are_reported_and_good_lines_kept(tmp_path: Path) -> None:
    p = tmp_path / "corpus.jsonl"
    p.write_text(
        '{"_id": "a", "title": "A", "text": "alpha"}\n'
        "not json\n"
        '{"id": "b", "text": "beta"}\n'
        '{"_id": "c"}\n'
    )
    failures: list[LoadFailure] = []
    docs = list(load_file(p, failures))
    assert [d.metadata["external_id"] for d in docs] == ["a", "b"]
    assert docs[0].text == "A\n\nalpha"
    assert [f.source for f in failures] == [f"{p}:2", f"{p}:4"]


def test_unsupported_extension_is_named(tmp_path: Path) -> None:
    p = tmp_path / "sheet.xlsx"
    p.write_bytes(b"PK")
    with pytest.raises(LoadError, match=r"unsupported file type '\.xlsx'"):
        _load(p)


def test_discover_recurses_and_skips_hidden_and_unsupported(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.md").write_text("x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "y.txt").write_text("y")
    (tmp_path / "z.bin").write_bytes(b"z")
    files, missing = discover([tmp_path, tmp_path / "nope.txt"])
    assert files == [(tmp_path / "a" / "x.md").resolve()]
    assert [m.reason for m in missing] == ["no such file or directory"]


def test_pdf_pages_lose_page_numbers_running_headers_and_line_hyphens() -> None:
    from ingest.loaders import clean_pdf_pages

    words = ["valves", "seals", "motors", "filters", "hoses", "gauges"]
    pages = [
        f"Pump Manual · Chapter {1 + i // 3}\nThe {w} section: the man-\nagement team "
        f"checks {w} weekly.\nA well-\nKnown fact about {w}.\nPage {i + 1} of 6"
        for i, w in enumerate(words)
    ]
    pages[2] = "Safety first\n" + pages[2]  # a first line seen once is content
    cleaned = clean_pdf_pages(pages)
    assert cleaned[0] == (
        "The valves section: the management team checks valves weekly.\n"
        "A well-\nKnown fact about valves."
    )
    assert cleaned[2].startswith("Safety first\nThe motors section")
    assert all("Chapter" not in c and "Page" not in c for c in cleaned)


def test_pdf_cleaning_keeps_short_documents_and_bare_numbers_inside_the_text() -> None:
    from ingest.loaders import clean_pdf_pages

    pages = ["Title page\nIntroduction\n42\nThe answer above is a number.\nEnd", "ii\nMore text"]
    assert clean_pdf_pages(pages) == [
        "Title page\nIntroduction\n42\nThe answer above is a number.\nEnd",
        "More text",
    ]


def test_pdf_paragraph_ends_become_blank_lines_for_the_chunker() -> None:
    from ingest.loaders import clean_pdf_pages

    page = (
        "The pump must be primed before its first start, or the seals run dry and\n"
        "wear out within hours. Fill the housing through the priming port until\n"
        "water flows from the vent.\n"
        "Check the seals every month. Replace them when you see any drops below\n"
        "the shaft, and always replace both seals of a pair at the same time:\n"
        "mixing old and new seals shortens the life of both."
    )
    first, second = clean_pdf_pages([page])[0].split("\n\n")
    assert first.endswith("water flows from the vent.")
    assert second.startswith("Check the seals every month.")


@pytest.mark.parametrize(
    "data",
    [
        b"\x8f\x11 random bytes, not a ZIP archive" * 40,  # python-docx: "Package not found"
        b"PK\x03\x04 a truncated ZIP header",
    ],
    ids=["not-a-zip", "broken-zip"],
)
def test_a_file_that_is_not_a_docx_says_so_without_its_path(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "random.docx"
    p.write_bytes(data)
    with pytest.raises(LoadError, match=r"not a valid \.docx file") as raised:
        _load(p)
    assert str(tmp_path) not in str(raised.value)


def test_a_zip_without_a_word_document_is_not_a_docx(tmp_path: Path) -> None:
    import zipfile

    p = tmp_path / "sheet.docx"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("hello.txt", "not a Word document")
    with pytest.raises(LoadError, match=r"not a valid \.docx file \(no Word document inside\)"):
        _load(p)
