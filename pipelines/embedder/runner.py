"""An ONNX export at run time: Rust tokenizer, padded batches, ONNX Runtime or OpenVINO."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from pipelines.embedder.batching import padded_batches
from pipelines.embedder.sessions import openvino_session, ort_session

if TYPE_CHECKING:
    import numpy.typing as npt
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

Engine = Literal["ort", "openvino"]
MIN_COSINE = 0.999  # an fp32 export or a bf16 engine must stay this close to torch
# Fixed sentences whose torch vectors are kept with each export, to check any engine by.
PROBES = (
    "What is the boiling point of water at sea level?",
    "Aspirin reduces the risk of myocardial infarction in adults over fifty.",
    "Qdrant Edge runs the vector search engine inside the application process.",
    "kurz",
)


class OnnxRunner:
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
        session = openvino_session if engine == "openvino" else ort_session
        self._run = session(folder / "model.onnx", threads)

    def encode(self, texts: Sequence[str], *, batch_size: int) -> npt.NDArray[np.float32]:
        # One text (a query): encode() keeps the GIL, where encode_batch() releases it, and a
        # store search holding the GIL for milliseconds can take it then (docs/benchmarks.md).
        if len(texts) == 1:
            encodings = [self.tokenizer.encode(texts[0])]
        else:
            encodings = self.tokenizer.encode_batch(list(texts))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for rows, ids, mask in padded_batches([e.ids for e in encodings], batch_size):
            out[rows] = self._run(ids, mask)
        return _normalize(out)


def _normalize(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return cast("npt.NDArray[np.float32]", vectors / np.maximum(norms, 1e-12))


def agreement(runner: OnnxRunner, reference: npt.ArrayLike) -> float:
    """The worst cosine between the runner's probe vectors and the reference ones."""
    got = runner.encode(list(PROBES), batch_size=len(PROBES))
    return float(np.min(np.sum(np.asarray(reference, dtype=np.float32) * got, axis=1)))


def open_runner(folder: Path, meta: dict[str, Any], *, backend: str, threads: int) -> OnnxRunner:
    """The export run by the backend's engine. An OpenVINO run that strays from torch's
    vectors (kept with the export) falls back to ONNX Runtime."""
    if backend == "openvino":
        runner = OnnxRunner(folder, meta, threads=threads, engine="openvino")
        worst = agreement(runner, meta["probes"])
        if worst >= MIN_COSINE:
            return runner
        log.warning(
            "OpenVINO's vectors differ from the model's on this CPU (cosine %.4f): "
            "using ONNX Runtime in fp32",
            worst,
        )
    return OnnxRunner(folder, meta, threads=threads)
