"""Settings reach the parts they configure: RAG_RETRIEVAL__* and RAG_EMBEDDING__* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.core import build_core
from pipelines.settings import Settings
from pipelines.sparse import QdrantBm25Encoder
from pipelines.stores.edge import EdgeStore, edge_request
from pipelines.stores.terms import Selection
from tests.support.fakes import ShapeOnlyEmbedder


async def test_retrieval_settings_reach_the_service_and_bm25(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAG_RETRIEVAL__BM25_K1", "1.7")
    monkeypatch.setenv("RAG_RETRIEVAL__BM25_B", "0.25")
    monkeypatch.setenv("RAG_RETRIEVAL__DEDUPE", "false")
    monkeypatch.setenv("RAG_RETRIEVAL__MODE", "sparse")
    monkeypatch.setenv("RAG_RETRIEVAL__K", "7")
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    core = build_core(settings, embedder=ShapeOnlyEmbedder())
    try:
        service = core.retrieval
        assert isinstance(service.sparse, QdrantBm25Encoder)
        assert service.sparse is core.sparse  # the one encoder ingest writes with
        assert (service.sparse.k1, service.sparse.b) == (1.7, 0.25)
        assert (service.dedupe, service.default_mode, service.default_k) == (False, "sparse", 7)
        assert service.reranker is None  # no cross-encoder configured
    finally:
        await core.close()


@pytest.mark.parametrize(
    ("setting", "expected", "payload"), [(None, "int8", "cached"), ("none", None, "cold")]
)
async def test_qdrant_storage_settings_reach_the_created_shard(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    setting: str | None,
    expected: str | None,
    payload: str,
) -> None:
    import json

    from pipelines.stores import build_store

    if setting is not None:
        monkeypatch.setenv("RAG_QDRANT__QUANTIZATION", setting)
        monkeypatch.setenv("RAG_QDRANT__PAYLOAD_MEMORY", payload)
    monkeypatch.setenv("RAG_QDRANT__HNSW_EF", "99")
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    store = build_store(settings, dim=4, embedding_model="m")
    assert isinstance(store, EdgeStore)
    try:
        await store.ensure_collection("c", create=True)
    finally:
        await store.close()
    config = json.loads((settings.qdrant_dir / "c" / "edge_config.json").read_text())
    quantization = config["vectors"]["dense"].get("quantization_config")
    assert (quantization or {}).get("scalar", {}).get("type") == expected
    assert config["payload_memory"] == payload
    query = [1.0, 0.0, 0.0, 0.0]
    search = edge_request(
        store.nearest(query, limit=10, k=10, filters=Selection(), candidates=False)
    )
    assert search.params is not None and search.params.hnsw_ef == 99


@pytest.mark.parametrize("rescore", [False, True])
def test_fusion_candidates_rescore_only_when_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rescore: bool
) -> None:
    from pipelines.stores import build_store

    if not rescore:
        monkeypatch.setenv("RAG_QDRANT__RESCORE_CANDIDATES", "false")
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    store = build_store(settings, dim=4, embedding_model="m")
    assert isinstance(store, EdgeStore)
    query = [1.0, 0.0, 0.0, 0.0]
    fused = edge_request(
        store.nearest(query, limit=200, k=20, filters=Selection(), candidates=True)
    )
    final = edge_request(
        store.nearest(query, limit=10, k=10, filters=Selection(), candidates=False)
    )
    assert fused.params is not None and final.params is not None
    assert fused.params.quantization.rescore is rescore
    assert final.params.quantization.rescore is True  # a plain search's k always are
