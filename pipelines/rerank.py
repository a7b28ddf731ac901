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
        if not texts:
            return []
        with self._lock:
            scores = self._model.predict(
                [(query, t) for t in texts],
                batch_size=self._batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return [float(s) for s in scores]


def build_reranker(
    settings: RetrievalSettings, device: str | None = None
) -> CrossEncoderReranker | None:
    """The configured reranker, or None (the default: no cross-encoder ships offline)."""
    if not settings.rerank_model:
        return None
    return CrossEncoderReranker(
        settings.rerank_model, device=device, batch_size=settings.rerank_batch_size
    )
