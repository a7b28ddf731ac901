"""Inference sessions on an ONNX file, ONNX Runtime's or OpenVINO's, on the CPU."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

log = logging.getLogger(__name__)

# (input_ids, attention_mask) → one pooled vector per row, not yet normalized.
RunFn = Callable[["npt.NDArray[np.int64]", "npt.NDArray[np.int64]"], "npt.NDArray[np.float32]"]


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def ort_session(model_file: Path, threads: int) -> RunFn:
    import onnxruntime as ort  # type: ignore[import-untyped]  # no stubs

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle pool threads sleep instead of spinning: the chunker thread and the event loop
    # share the cores, and spinning took CPU from them without being faster when idle.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def run(ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        (vectors,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
        return cast("npt.NDArray[np.float32]", vectors)

    return run


def openvino_session(model_file: Path, threads: int) -> RunFn:
    """OpenVINO on the CPU with its default precision: bf16 where the CPU computes it natively
    (AMX, AVX512-BF16), fp32 elsewhere. Latency hint: one request at a time, all threads."""
    import openvino as ov  # type: ignore[import-untyped]  # no stubs

    # No thread pinning: the event loop, the store's search threads and the chunker share
    # these cores, and a pinned inference thread waits for its core to come free (hybrid
    # search latency at 1M points: docs/benchmarks.md; batches were not slower).
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
