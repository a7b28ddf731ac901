"""Vector store adapters and the one function that picks one from the settings."""

from __future__ import annotations

from pipelines.ports import VectorStore
from pipelines.settings import Settings
from pipelines.stores.common import HybridParams


def build_store(settings: Settings, *, dim: int, embedding_model: str) -> VectorStore:
    q = settings.qdrant
    common = {
        "dim": dim,
        "embedding_model": embedding_model,
        "hnsw_m": q.hnsw_m,
        "hnsw_ef_construct": q.hnsw_ef_construct,
        "hnsw_ef": q.hnsw_ef,
        "quantization": q.quantization,
        "oversampling": q.oversampling,
        "rescore_candidates": q.rescore_candidates,
        "hybrid": HybridParams.from_settings(settings.retrieval),
    }
    if q.url:
        from pipelines.stores.server import QdrantServerStore

        api_key = q.api_key.get_secret_value() if q.api_key else None
        return QdrantServerStore.connect(
            q.url,
            api_key,
            q.timeout_s,
            shard_number=q.shard_number,
            replication_factor=q.replication_factor,
            **common,
        )
    from pipelines.stores.edge import EdgeStore

    return EdgeStore(
        settings.qdrant_dir,
        payload_in_ram=q.payload_memory == "cached",
        **common,  # type: ignore[arg-type]
    )
