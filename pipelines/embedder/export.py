"""ONNX export of a sentence-transformers model: trace, fuse, quantize if asked, check vs torch."""

# Once per model and backend; it needs torch, which is never loaded at run time after it.

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from pipelines.embedder.runner import MIN_COSINE, PROBES, OnnxRunner, agreement
from pipelines.embedder.sessions import cpu_threads

log = logging.getLogger(__name__)

# Bump when the export recipe changes: caches made by an older recipe are rebuilt.
EXPORT_VERSION = 3
META = "export.json"


def quiet_transformers() -> None:
    """Loading a model shows no transformers progress bar ("Loading weights") and no advice
    meant for its developers: the CLI draws its own progress, and lengths are bounded by us."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


class Unsupported(Exception):
    """The model's module layout has no ONNX export here; torch serves it."""


def fingerprint(path: str) -> str:
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


def export(source: str, target: Path, *, quantize: bool) -> None:
    """Export Transformer → Pooling(mean|cls) → [Normalize] to ONNX under `target`, atomically."""
    import torch
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    quiet_transformers()
    st: Any = SentenceTransformer(source, device="cpu", local_files_only=True)
    modules: list[Any] = list(st)
    names = [type(m).__name__ for m in modules]
    if names[:2] != ["Transformer", "Pooling"] or names[2:] not in ([], ["Normalize"]):
        raise Unsupported(f"module layout {names}")
    pooling = modules[1].pooling_mode
    if pooling not in ("mean", "cls") or getattr(st, "default_prompt_name", None):
        raise Unsupported(f"pooling {pooling!r} or a default prompt")
    hf: Any = modules[0].auto_model.eval()
    if hasattr(hf, "set_attn_implementation"):
        hf.set_attn_implementation("eager")  # traces to plain ops the ORT fusions recognise
    tokenizer: Any = st.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise Unsupported("a slow (Python) tokenizer")
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
            "fingerprint": fingerprint(source),
            "quantized": quantize,
            "dim": int(st.get_embedding_dimension()),
            "max_tokens": max_len,
            "pooling": pooling,
        }
        meta["probes"] = _validate(st, work, meta)
        (work / META).write_text(json.dumps(meta, indent=2))
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

    u8×s8 kernels ran faster than u8×u8 on AVX2 at the same fidelity (docs/benchmarks.md,
    "Figures behind the defaults"); a reduced range costs fidelity for nothing.
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
    runner = OnnxRunner(folder, meta, threads=cpu_threads(), engine="ort")
    hf_ids = st.tokenizer(list(PROBES), truncation=True, max_length=meta["max_tokens"])
    ours = [enc.ids for enc in runner.tokenizer.encode_batch(list(PROBES))]
    if [list(x) for x in hf_ids["input_ids"]] != ours:
        raise Unsupported("its tokenizer.json tokenizes differently from the model's tokenizer")
    ref = st.encode(
        list(PROBES), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    worst = agreement(runner, ref)
    if worst < (0.98 if meta["quantized"] else MIN_COSINE):
        raise Unsupported(f"the export disagrees with torch (cosine {worst:.4f})")
    return [[round(float(x), 7) for x in row] for row in ref]
