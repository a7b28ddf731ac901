"""Length-sorted, padding-aware batches of token ids for the ONNX runs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

# Tokens per ONNX run (32 full-length rows): larger runs were no faster on CPU and cost peak
# memory (docs/benchmarks.md, "Figures behind the defaults").
BATCH_TOKENS = 8192
PAD_WASTE = 0.05

Batch = tuple["npt.NDArray[np.intp]", "npt.NDArray[np.int64]", "npt.NDArray[np.int64]"]


def padded_batches(token_ids: Sequence[Sequence[int]], max_rows: int) -> Iterator[Batch]:
    """(rows, input_ids, attention_mask) per run, longest texts first; `rows` are the
    positions of the run's texts in `token_ids`."""
    lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
    order = np.argsort(-lengths, kind="stable")
    for run in runs(lengths[order], max_rows):
        rows = order[run]
        width = int(lengths[rows[0]])
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows.tolist()):
            n = int(lengths[i])
            ids[r, :n] = token_ids[i]
            mask[r, :n] = 1
        yield rows, ids, mask


def runs(widths: npt.NDArray[np.int64], max_rows: int) -> Iterator[slice]:
    """Cut widths sorted longest first into runs that waste little on padding.

    A run grows while padding stays under PAD_WASTE of its tensor, up to `max_rows` rows and
    BATCH_TOKENS tokens: fixed-size runs spent far more of each tensor on padding, and CPU
    with it (docs/benchmarks.md, "Figures behind the defaults").
    """
    start, n = 0, len(widths)
    while start < n:
        width = int(widths[start])
        limit = min(n, start + max(1, min(max_rows, BATCH_TOKENS // max(width, 1))))
        end, real = start + 1, width
        while end < limit:
            rows = end - start + 1
            if rows * width - (real + int(widths[end])) > PAD_WASTE * rows * width:
                break
            real += int(widths[end])
            end += 1
        yield slice(start, end)
        start = end
