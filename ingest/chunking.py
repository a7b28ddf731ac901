"""Token-aware chunking with LangChain splitters: no chunk exceeds the embedder's window."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from ingest.loaders import LoadedDocument

_STRUCTURED = {"markdown", "html", "docx"}
_HEADING = re.compile(r"(?m)^(?=#{1,6} )")


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str
    char_start: int
    char_end: int
    page: int | None


class Chunker:
    """Split documents into chunks of at most `chunk_tokens` embedder tokens."""

    def __init__(
        self, count_tokens: Callable[[str], int], chunk_tokens: int, overlap_tokens: int
    ) -> None:
        # The recursive splitter measures each piece about three times (split, merge, overlap
        # pop); tokenizing once per distinct piece keeps chunking off the embedder's cores.
        count = functools.lru_cache(maxsize=2048)(count_tokens)
        self._count = count
        self.chunk_tokens = chunk_tokens
        overlap = min(overlap_tokens, chunk_tokens // 4)

        def splitter(separators: list[str]) -> RecursiveCharacterTextSplitter:
            return RecursiveCharacterTextSplitter(
                separators=separators,
                chunk_size=chunk_tokens,
                chunk_overlap=overlap,
                length_function=count,
                add_start_index=True,
                strip_whitespace=True,
            )

        self._plain = splitter(["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""])
        self._markdown = splitter(
            RecursiveCharacterTextSplitter.get_separators_for_language(Language.MARKDOWN)
        )

    def _blocks(self, text: str, structured: bool) -> Iterator[tuple[int, str]]:
        """Heading-delimited blocks (greedily merged while they fit) with their offsets."""
        if not structured:
            yield 0, text
            return
        starts = [m.start() for m in _HEADING.finditer(text)]
        bounds = sorted({0, *starts, len(text)})
        cur_start, cur_tokens = 0, 0
        for a, b in itertools.pairwise(bounds):
            tokens = self._count(text[a:b])
            if a > cur_start and cur_tokens + tokens > self.chunk_tokens:
                yield cur_start, text[cur_start:a]
                cur_start, cur_tokens = a, 0
            cur_tokens += tokens
        yield cur_start, text[cur_start:]

    def split(self, doc: LoadedDocument) -> list[TextChunk]:
        structured = doc.kind in _STRUCTURED
        splitter = self._markdown if structured else self._plain
        chunks: list[TextChunk] = []
        offset = 0
        for section in doc.sections:
            for block_start, text in self._blocks(section.text, structured):
                base = offset + block_start
                if self._count(text) <= self.chunk_tokens:
                    stripped = text.strip()
                    if stripped:
                        start = base + text.find(stripped)
                        chunks.append(
                            TextChunk(stripped, start, start + len(stripped), section.page)
                        )
                    continue
                for piece in splitter.create_documents([text]):
                    start = base + int(piece.metadata.get("start_index", 0))
                    chunks.append(
                        TextChunk(
                            piece.page_content, start, start + len(piece.page_content), section.page
                        )
                    )
            offset += len(section.text) + 2  # sections are joined with a blank line
        return chunks
