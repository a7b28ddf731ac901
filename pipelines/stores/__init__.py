"""Vector store adapters and the one function that picks one from the settings."""

from __future__ import annotations

from pipelines.ports import VectorStore
from pipelines.settings import Settings
from pipelines.stores.config import StoreConfig


def build_store(settings: Settings, *, dim: int, embedding_model: str) -> VectorStore:
    """A Qdrant server store when `qdrant.url` is set, else the embedded Edge store."""
    q = settings.qdrant
    config = StoreConfig.from_settings(
        q, settings.retrieval, dim=dim, embedding_model=embedding_model
    )
    if q.url:
        from pipelines.stores.server import QdrantServerStore

        api_key = q.api_key.get_secret_value() if q.api_key else None
        return QdrantServerStore.connect(q.url, api_key, q.timeout_s, config)
    from pipelines.stores.edge import EdgeStore

    return EdgeStore(settings.qdrant_dir, config)
