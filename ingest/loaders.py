"""Files to documents: one loader per format, each failing with a reason a user can act on."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.access import check_groups, parse_groups
from pipelines.errors import InvalidInput

SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".jsonl")


class LoadError(Exception):
    """The file cannot be ingested; the message says why (shown to the user as-is)."""


@dataclass(slots=True)
class Section:
    text: str
    page: int | None = None


@dataclass(slots=True)
class LoadedDocument:
    """A document as extracted: its identity key, title and text sections (pages for PDF)."""

    key: str  # unique within the collection: the source, plus '#id' for corpus lines
    source: str
    title: str
    sections: list[Section]
    kind: str  # "text", "markdown", "html", "pdf", "docx", "jsonl"
    metadata: dict[str, Any] = field(default_factory=dict)
    # The file's absolute path on the server, kept (never shown) for a CLI-ingested document
    # whose `source` is its display name; "" for an upload (its name is its identity).
    path: str = ""
    # Its own access list (a corpus line's `groups`), sorted; None: the run's groups.
    groups: tuple[str, ...] | None = None
    # The file that is this document as a whole (None for a corpus line): the copy
    # `ingest/originals.py` keeps. Never stored in the payload.
    original: Path | None = None

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


@dataclass(slots=True)
class LoadFailure:
    source: str
    reason: str


def renamed(value: str, path: str, name: str) -> str:
    """A loaded file's key or source with its path replaced by its display name; corpus lines
    ('path#id', 'path:line') keep their suffix."""
    if value == path or value.startswith((path + "#", path + ":")):
        return name + value[len(path) :]
    return value


def _file_of(source: str, names: Mapping[str, str]) -> str | None:
    """The file path a failure's source ('path', 'path:line', 'path#id') starts with."""
    if source in names:
        return source
    for i, ch in enumerate(source):
        if ch in "#:" and source[:i] in names:
            return source[:i]
    return None


def public_failure(failure: LoadFailure, names: Mapping[str, str]) -> dict[str, str]:
    """A failure as a user reads it: its file's path replaced by its display name, in its
    source and in its reason (a library's message may quote the path; an upload's path is a
    temporary folder of the server)."""
    path = _file_of(failure.source, names)
    if path is None:
        return {"source": failure.source, "reason": failure.reason}
    name = names[path]
    return {
        "source": renamed(failure.source, path, name),
        "reason": failure.reason.replace(path, name),
    }


_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1f]")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise LoadError("empty file")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise LoadError(f"invalid UTF-16 text ({exc.reason} at byte {exc.start})") from exc
    head = data[:8192]
    if b"\x00" in head or len(_CONTROL.findall(head)) > len(head) // 20:
        raise LoadError("binary content, not text (is the extension wrong?)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoadError(
            f"not valid UTF-8 ({exc.reason} at byte {exc.start}); convert the file to UTF-8"
        ) from exc


def _nonempty(text: str) -> str:
    if not text.strip():
        raise LoadError("no text content")
    return text


def _first_heading(text: str) -> str | None:
    for line in text.splitlines()[:50]:
        m = re.match(r"^#{1,3}\s+(.+?)\s*#*\s*$", line)
        if m:
            return m.group(1)
    return None


def load_text(path: Path) -> Iterator[LoadedDocument]:
    text = _nonempty(_read_text(path))
    markdown = path.suffix.lower() in (".md", ".markdown")
    title = (_first_heading(text) if markdown else None) or path.stem
    yield LoadedDocument(
        key=str(path),
        source=str(path),
        title=title,
        sections=[Section(text)],
        kind="markdown" if markdown else "text",
    )


def load_html(path: Path) -> Iterator[LoadedDocument]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_read_text(path), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    # Keep headings as Markdown so the splitter can cut on them.
    for level in range(1, 7):
        for h in soup.find_all(f"h{level}"):
            h.replace_with(f"\n\n{'#' * level} {h.get_text(' ', strip=True)}\n\n")
    title_tag = soup.find("title")
    title = title_tag.get_text(strip=True) if title_tag else ""
    body = soup.body or soup
    text = re.sub(r"\n{3,}", "\n\n", body.get_text("\n"))
    text = "\n".join(line.strip() for line in text.splitlines())
    yield LoadedDocument(
        key=str(path),
        source=str(path),
        title=title or _first_heading(text) or path.stem,
        sections=[Section(_nonempty(text).strip())],
        kind="html",
    )


_DIGITS = re.compile(r"\d+")
_PAGE_NUMBER = re.compile(r"^\s*(?:[Pp]age\s+)?(?:\d+|[ivxlc]{1,6})(?:\s*(?:/|of)\s*\d+)?\s*$")
_BROKEN_WORD = re.compile(r"([A-Za-z])-\n([a-z])")
EDGE_LINES = 2  # lines at the top and at the bottom of a page that may be a running header


def clean_pdf_pages(pages: list[str]) -> list[str]:
    """Text layers of a PDF's pages without what is not content: page numbers, running
    headers and footers (a top or bottom line repeated on several pages, digits aside, such
    as "Chapter 2: Setup 14"), and words hyphenated across a line break ("man-\\nagement").
    """
    split = [p.splitlines() for p in pages]
    seen: dict[str, int] = {}
    for lines in split:
        edges = {_DIGITS.sub("#", ln.strip()) for ln in lines[:EDGE_LINES] + lines[-EDGE_LINES:]}
        for key in edges - {""}:
            seen[key] = seen.get(key, 0) + 1
    repeated = {k for k, n in seen.items() if n >= max(3, len(pages) // 10)}
    out = []
    for lines in split:
        n = len(lines)
        kept = [
            ln
            for i, ln in enumerate(lines)
            if not (
                (i < EDGE_LINES or i >= n - EDGE_LINES)
                and (_PAGE_NUMBER.match(ln) or _DIGITS.sub("#", ln.strip()) in repeated)
            )
        ]
        out.append(_BROKEN_WORD.sub(r"\1\2", _paragraphs(kept)).strip())
    return out


def _paragraphs(lines: list[str]) -> str:
    """Lines joined, with a blank line where a paragraph probably ends (a sentence ends on a
    line clearly shorter than the page's typical line), so the chunker can cut there rather
    than anywhere: a PDF's text layer has a line break at the end of every printed line."""
    widths = sorted(len(ln.rstrip()) for ln in lines if ln.strip())
    if len(widths) < 4:
        return "\n".join(lines)
    short = 0.8 * widths[len(widths) // 2]
    parts = []
    for i, line in enumerate(lines):
        parts.append(line)
        end = line.rstrip()
        if i + 1 < len(lines) and end.endswith((".", "!", "?", ":")) and len(end) < short:
            parts.append("")
    return "\n".join(parts)


def load_pdf(path: Path) -> Iterator[LoadedDocument]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    # pypdf logs its own warning for what it recovers from or gives up on ("invalid pdf
    # header", "EOF marker not found"): a file that fails is reported once, by the LoadError.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError("encrypted PDF (password required)")
        texts = clean_pdf_pages([page.extract_text() or "" for page in reader.pages])
        sections = [
            Section(text, page=number) for number, text in enumerate(texts, start=1) if text
        ]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except LoadError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(f"corrupt or unreadable PDF ({type(exc).__name__}: {exc})") from exc
    if not sections:
        raise LoadError("PDF has no text layer (scanned images need OCR first)")
    yield LoadedDocument(
        key=str(path),
        source=str(path),
        title=str(meta_title) or path.stem,
        sections=sections,
        kind="pdf",
        metadata={"pages": len(reader.pages)},
    )


def load_docx(path: Path) -> Iterator[LoadedDocument]:
    import zipfile

    import docx
    from docx.opc.exceptions import OpcError

    # The library's messages name the file's path on this machine: say what is wrong instead.
    try:
        document = docx.Document(str(path))
    except zipfile.BadZipFile as exc:
        raise LoadError("not a valid .docx file (a damaged ZIP archive)") from exc
    except (OpcError, KeyError, ValueError) as exc:
        raise LoadError("not a valid .docx file (no Word document inside)") from exc
    lines = []
    for para in document.paragraphs:
        text = para.text.strip()
        if not text:
            continue
        style = (para.style.name if para.style is not None else "") or ""
        m = re.match(r"Heading (\d)", style)
        lines.append(f"{'#' * int(m.group(1))} {text}" if m else text)
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    text = _nonempty("\n\n".join(lines))
    title = document.core_properties.title or _first_heading(text) or path.stem
    yield LoadedDocument(
        key=str(path), source=str(path), title=title, sections=[Section(text)], kind="docx"
    )


def _line_groups(value: object) -> tuple[str, ...] | None:
    """A corpus line's `groups`: a list of names or one comma-separated string (None: the
    line has none, the run's apply); InvalidInput when it is neither or names a bad group."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_groups(value)
    if isinstance(value, list):
        return check_groups(value)
    raise InvalidInput("'groups' must be a list of group names or a comma-separated string")


def load_jsonl(path: Path, failures: list[LoadFailure]) -> Iterator[LoadedDocument]:
    """A corpus: one JSON document per line with `_id`/`id`, optional `title`, and `text`,
    optional `groups` (its access list, instead of the run's)."""
    seen = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                failures.append(LoadFailure(where, f"invalid JSON line ({exc})"))
                continue
            if not isinstance(row, dict):
                failures.append(LoadFailure(where, "line is not a JSON object"))
                continue
            doc_id = row.get("_id", row.get("id"))
            text = row.get("text")
            if doc_id is None or not isinstance(text, str) or not text.strip():
                failures.append(LoadFailure(where, "needs '_id' (or 'id') and a non-empty 'text'"))
                continue
            try:
                groups = _line_groups(row.get("groups"))
            except InvalidInput as exc:
                failures.append(LoadFailure(where, exc.message))
                continue
            title = str(row.get("title") or "").strip()
            body = f"{title}\n\n{text}" if title else text
            seen += 1
            yield LoadedDocument(
                key=f"{path}#{doc_id}",
                source=str(path),
                title=title or str(doc_id),
                sections=[Section(body)],
                kind="jsonl",
                metadata={"external_id": str(doc_id)},
                groups=groups,
            )
    if seen == 0 and not failures:
        raise LoadError("empty file")


Loader = Callable[[Path], Iterator[LoadedDocument]]
_LOADERS: dict[str, Loader] = {
    ".txt": load_text,
    ".md": load_text,
    ".markdown": load_text,
    ".html": load_html,
    ".htm": load_html,
    ".pdf": load_pdf,
    ".docx": load_docx,
}


def load_file(path: Path, failures: list[LoadFailure]) -> Iterator[LoadedDocument]:
    """Yield the file's documents; raise LoadError for a whole-file failure."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from load_jsonl(path, failures)
        return
    loader = _LOADERS.get(suffix)
    if loader is None:
        raise LoadError(
            f"unsupported file type '{suffix or path.name}' (supported: {', '.join(SUPPORTED)})"
        )
    for doc in loader(path):
        doc.original = path
        yield doc


def discover(paths: list[Path]) -> tuple[list[Path], list[LoadFailure]]:
    """Expand folders recursively (supported types, no hidden files); report missing paths."""
    files, _, missing = discover_named(paths)
    return files, missing


def discover_named(
    paths: list[Path],
) -> tuple[list[Path], dict[str, str], list[LoadFailure]]:
    """`discover`, with each file's display name (by its resolved path): its path relative to
    the folder it was found under ('guides/install.md'), or its file name when given as a
    file. A file reached from several paths keeps the name of the first."""
    files: list[Path] = []
    names: dict[str, str] = {}
    missing: list[LoadFailure] = []
    for root in paths:
        if root.is_dir():
            for p, rel in _visible_files(root):
                if p.suffix.lower() in SUPPORTED:
                    resolved = p.resolve()
                    files.append(resolved)
                    names.setdefault(str(resolved), "/".join(rel))
        elif root.is_file():
            resolved = root.resolve()
            files.append(resolved)
            names.setdefault(str(resolved), resolved.name)
        else:
            missing.append(LoadFailure(str(root), "no such file or directory"))
    return list(dict.fromkeys(files)), names, missing


def _visible_files(root: Path) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """The files under a folder, sorted, with their parts relative to it; hidden ones (a dot
    on the name or on a folder on the way) left out, as a person would not count them."""
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if p.is_file() and not any(part.startswith(".") for part in rel):
            yield p, rel


def skipped_types(paths: Sequence[Path]) -> dict[str, int]:
    """The files inside the folders of `paths` that discovery passes over for their type, as
    {'.csv': 3, '.pptx': 1} ('(none)' for no extension): a folder ingest names what it did not
    read rather than drop it without a word. A file given by name is not counted here: its
    unsupported type is a failure of the run, with the reason. A second walk of the folders,
    so that `discover_named` keeps its shape for its callers (cheap next to loading)."""
    counts: Counter[str] = Counter()
    for root in paths:
        if root.is_dir():
            for p, _ in _visible_files(root):
                suffix = p.suffix.lower()
                if suffix not in SUPPORTED:
                    counts[suffix or "(none)"] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
