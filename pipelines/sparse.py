"""BM25-style sparse vectors from Qdrant's own tokenizer/stemmer; the store applies IDF."""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.settings import RetrievalSettings
from pipelines.types import SparseVector


class QdrantBm25Encoder:
    """Term-frequency vectors (BM25 saturation and length norm) hashed to token ids.

    Qdrant's English analyzer: lowercase, English stopwords, Snowball stemming. Unset
    parameters take the RetrievalSettings defaults (tuned on SciFact train).
    """

    def __init__(
        self, k1: float | None = None, b: float | None = None, avg_len: float | None = None
    ) -> None:
        from qdrant_edge import Bm25, Bm25Config

        defaults = RetrievalSettings()
        self.k1 = defaults.bm25_k1 if k1 is None else k1
        self.b = defaults.bm25_b if b is None else b
        self.avg_len = defaults.bm25_avg_len if avg_len is None else avg_len
        self._bm25 = Bm25(Bm25Config(k=self.k1, b=self.b, avg_len=self.avg_len))

    @classmethod
    def from_settings(cls, settings: RetrievalSettings) -> QdrantBm25Encoder:
        return cls(settings.bm25_k1, settings.bm25_b, settings.bm25_avg_len)

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        out = []
        for text in texts:
            vec = self._bm25.embed_document(text)
            out.append(SparseVector(indices=list(vec.indices), values=list(vec.values)))
        return out

    def encode_query(self, text: str) -> SparseVector:
        vec = self._bm25.embed_query(text)
        return SparseVector(indices=list(vec.indices), values=list(vec.values))
