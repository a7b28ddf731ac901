"""BM25-style sparse vectors from Qdrant's own tokenizer/stemmer; the store applies IDF."""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.types import SparseVector


class QdrantBm25Encoder:
    """Term-frequency vectors (BM25 saturation and length norm) hashed to token ids."""

    def __init__(self, k1: float = 1.2, b: float = 0.75, avg_len: float = 256.0) -> None:
        from qdrant_edge import Bm25, Bm25Config

        self._bm25 = Bm25(Bm25Config(k=k1, b=b, avg_len=avg_len))

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        out = []
        for text in texts:
            vec = self._bm25.embed_document(text)
            out.append(SparseVector(indices=list(vec.indices), values=list(vec.values)))
        return out

    def encode_query(self, text: str) -> SparseVector:
        vec = self._bm25.embed_query(text)
        return SparseVector(indices=list(vec.indices), values=list(vec.values))
