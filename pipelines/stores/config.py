"""StoreConfig: how a Qdrant store builds and searches its collections, taken from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelines.ranking import HybridParams
from pipelines.settings import QdrantSettings, RetrievalSettings


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """One store's tuning (QdrantSettings and RetrievalSettings say what each field does).

    Built by `from_settings`, so a store made in a test or a benchmark runs tuned like the
    product; `dataclasses.replace` varies a field (bench/search.py sweeps `hnsw_ef`).
    """

    dim: int
    embedding_model: str
    hnsw_m: int
    hnsw_ef_construct: int
    hnsw_ef: int
    quantization: Literal["int8", "none"]
    oversampling: float
    rescore_candidates: bool  # off: hybrid/MMR candidate lists keep their int8 scores
    payload_memory: Literal["cached", "cold"]  # the embedded store only
    shard_number: int  # a Qdrant server only
    replication_factor: int  # a Qdrant server only
    hybrid: HybridParams
    exact: bool = False  # brute-force dense search: the reference for HNSW recall
    min_free_mb: int = 64  # the embedded store refuses writes with less free on its disk

    @classmethod
    def from_settings(
        cls,
        qdrant: QdrantSettings | None = None,
        retrieval: RetrievalSettings | None = None,
        *,
        dim: int,
        embedding_model: str,
    ) -> StoreConfig:
        """The store the settings describe (the settings' defaults where none are given)."""
        q = qdrant or QdrantSettings()
        return cls(
            dim=dim,
            embedding_model=embedding_model,
            hnsw_m=q.hnsw_m,
            hnsw_ef_construct=q.hnsw_ef_construct,
            hnsw_ef=q.hnsw_ef,
            quantization=q.quantization,
            oversampling=q.oversampling,
            rescore_candidates=q.rescore_candidates,
            payload_memory=q.payload_memory,
            shard_number=q.shard_number,
            replication_factor=q.replication_factor,
            hybrid=HybridParams.from_settings(retrieval),
            min_free_mb=q.min_free_mb,
        )
