"""Second-stage reranking: a sentence-transformers CrossEncoder behind the Reranker port."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from pipelines.errors import ConfigError
from pipelines.settings import RetrievalSettings

log = logging.getLogger(__name__)


class CrossEncoderReranker:
    """A cross-encoder (local path or a model already in the Hugging Face cache), offline."""

    def __init__(
        self, model: str, *, device: str | None = None, batch_size: int = 32, max_length: int = 512
    ) -> None:
        from sentence_transformers import CrossEncoder

        try:
            self._model: Any = CrossEncoder(
                model, device=device, max_length=max_length, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the reranker '{model}' ({exc}); give a local path to a "
                "sentence-transformers CrossEncoder or unset RAG_RETRIEVAL__RERANK_MODEL"
            ) from exc
        self._name = model
        self._batch_size = batch_size
        self._lock = threading.Lock()  # one predict at a time: the model uses every core
        log.info("reranker %s loaded", model)

    @property
    def name(self) -> str:
        return self._name

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        return self.score_batch([(query, texts)])[0]

    def score_batch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """All requests' (query, text) pairs in one `predict` (its own `batch_size` still cuts
        the runs), split back per request: concurrent reranks cost one model call."""
        pairs = [(query, text) for query, texts in requests for text in texts]
        if not pairs:
            return [[] for _ in requests]
        with self._lock:
            scores = self._model.predict(
                pairs,
                batch_size=self._batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        flat = [float(s) for s in scores]
        out: list[list[float]] = []
        start = 0
        for _, texts in requests:
            out.append(flat[start : start + len(texts)])
            start += len(texts)
        return out


def build_reranker(
    settings: RetrievalSettings, device: str | None = None
) -> CrossEncoderReranker | None:
    """The configured reranker, or None (the default: no cross-encoder ships offline)."""
    if not settings.rerank_model:
        return None
    return CrossEncoderReranker(
        settings.rerank_model, device=device, batch_size=settings.rerank_batch_size
    )
