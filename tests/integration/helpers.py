"""Test helpers that read a store's full contents straight from the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import qdrant_edge as qe


def edge_snapshot(shard_dir: Path) -> dict[str, tuple[Any, ...]]:
    """chunk id -> (doc_id, chunk_index, content_hash, text) for every point in a shard."""
    shard = qe.EdgeShard.load(str(shard_dir))
    out: dict[str, tuple[Any, ...]] = {}
    offset: Any = None
    try:
        while True:
            records, offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=512, with_payload=True)
            )
            for r in records:
                p = r.payload or {}
                out[str(r.id)] = (p["doc_id"], p["chunk_index"], p["content_hash"], p["text"])
            if offset is None:
                return out
    finally:
        shard.close()
