"""What a store holds, read straight from the engine (Qdrant Edge's own API), not through our
adapter: the tests compare it before and after a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import qdrant_edge as qe


def _records(shard_dir: Path, *, with_vector: bool) -> Iterator[Any]:
    shard = qe.EdgeShard.load(str(shard_dir))
    offset: Any = None
    try:
        while True:
            records, offset = shard.scroll(
                qe.ScrollRequest(
                    offset=offset, limit=512, with_payload=True, with_vector=with_vector
                )
            )
            yield from records
            if offset is None:
                return
    finally:
        shard.close()


def edge_snapshot(shard_dir: Path) -> dict[str, tuple[Any, ...]]:
    """chunk id -> (doc_id, chunk_index, content_hash, text) for every point in a shard."""
    out: dict[str, tuple[Any, ...]] = {}
    for r in _records(shard_dir, with_vector=False):
        p = r.payload or {}
        out[str(r.id)] = (p["doc_id"], p["chunk_index"], p["content_hash"], p["text"])
    return out


def edge_sparse_vectors(shard_dir: Path) -> dict[str, dict[int, float]]:
    """text -> its stored sparse (BM25) vector as {index: value}, for every point in a shard."""
    out: dict[str, dict[int, float]] = {}
    for r in _records(shard_dir, with_vector=True):
        vectors = r.vector if isinstance(r.vector, dict) else {}
        sparse = [v for v in vectors.values() if isinstance(v, qe.SparseVector)]
        assert len(sparse) == 1, f"expected one sparse vector per point, got {vectors!r}"
        out[(r.payload or {})["text"]] = dict(zip(sparse[0].indices, sparse[0].values, strict=True))
    return out


def edge_payloads(shard_dir: Path) -> dict[str, dict[str, Any]]:
    """chunk id -> its whole stored payload, for every point in a shard."""
    return {str(r.id): dict(r.payload or {}) for r in _records(shard_dir, with_vector=False)}
