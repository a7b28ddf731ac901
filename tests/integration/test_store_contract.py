"""The same contract on both adapters: Qdrant Edge, and qdrant-client (local mode) for servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from pipelines.errors import CollectionNotFound, InvalidInput, SchemaMismatch
from pipelines.identity import chunk_point_id
from pipelines.ports import VectorStore
from pipelines.ranking import HybridParams
from pipelines.sparse import QdrantBm25Encoder
from pipelines.stores.config import StoreConfig
from pipelines.stores.edge import EdgeStore
from pipelines.stores.server import QdrantServerStore
from pipelines.types import Chunk, EmbeddedChunk, Range

DIM = 4


def _store(
    kind: str, root: Path, dim: int = DIM, hybrid: HybridParams | None = None
) -> VectorStore:
    """A store tuned like the product's (the settings' defaults), on either backend."""
    config = StoreConfig.from_settings(dim=dim, embedding_model="test")
    if hybrid is not None:
        config = replace(config, hybrid=hybrid)
    if kind == "edge":
        return EdgeStore(root / "edge", config)
    return QdrantServerStore(AsyncQdrantClient(path=str(root / "local")), config)


@pytest.fixture(params=["edge", "server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    s = _store(request.param, tmp_path)
    yield s
    await s.close()


_BM25 = QdrantBm25Encoder()


def _point(
    doc: str,
    i: int,
    n: int,
    vec: list[float],
    text: str,
    h: str = "h1",
    source: str = "/src/a.txt",
    page: int | None = None,
) -> EmbeddedChunk:
    chunk = Chunk(
        chunk_id=chunk_point_id(doc, i),
        doc_id=doc,
        collection="c",
        source=source,
        title=doc,
        text=text,
        chunk_index=i,
        chunk_count=n,
        char_start=0,
        char_end=len(text),
        content_hash=h,
        page=page,
    )
    return EmbeddedChunk(chunk, vec, _BM25.encode_documents([text])[0])


async def _seed(store: VectorStore) -> None:
    await store.ensure_collection("c", create=True)
    await store.upsert(
        "c",
        [
            _point("d1", 0, 2, [1, 0, 0, 0], "apples and pears", page=1),
            _point("d1", 1, 2, [0.9, 0.1, 0, 0], "apple orchards in autumn", page=2),
            _point("d2", 0, 1, [0, 1, 0, 0], "the history of steam engines", source="/src/b.md"),
            _point("d3", 0, 1, [0, 0, 1, 0], "quantum computing basics", source="/src/c.md"),
        ],
    )
    await store.commit("c")


async def test_unknown_collection_is_not_found(store: VectorStore) -> None:
    with pytest.raises(CollectionNotFound):
        await store.ensure_collection("missing", create=False)
    with pytest.raises(CollectionNotFound):
        await store.search("missing", dense=[1, 0, 0, 0], sparse=None, k=3, mode="dense")


async def test_bad_collection_name_is_invalid_input(store: VectorStore) -> None:
    with pytest.raises(InvalidInput, match="invalid collection name"):
        await store.ensure_collection("../etc", create=True)


async def test_dense_search_ranks_by_cosine(store: VectorStore) -> None:
    await _seed(store)
    hits = await store.search("c", dense=[1, 0, 0, 0], sparse=None, k=3, mode="dense")
    assert [h.payload["doc_id"] for h in hits][:2] == ["d1", "d1"]
    assert hits[0].chunk_id == chunk_point_id("d1", 0)
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


async def test_sparse_search_matches_terms(store: VectorStore) -> None:
    await _seed(store)
    hits = await store.search(
        "c", dense=None, sparse=_BM25.encode_query("steam engine history"), k=2, mode="sparse"
    )
    assert hits[0].payload["doc_id"] == "d2"


async def test_hybrid_fuses_both(store: VectorStore) -> None:
    await _seed(store)
    hits = await store.search(
        "c", dense=[0, 0, 1, 0], sparse=_BM25.encode_query("quantum"), k=4, mode="hybrid"
    )
    assert hits[0].payload["doc_id"] == "d3"


async def test_filters_on_source_doc_and_range(store: VectorStore) -> None:
    await _seed(store)
    q = [1.0, 0.0, 0.0, 0.0]
    by_source = await store.search(
        "c", dense=q, sparse=None, k=5, mode="dense", filters={"source": "/src/b.md"}
    )
    assert {h.payload["doc_id"] for h in by_source} == {"d2"}
    by_docs = await store.search(
        "c", dense=q, sparse=None, k=5, mode="dense", filters={"doc_id": ["d2", "d3"]}
    )
    assert {h.payload["doc_id"] for h in by_docs} == {"d2", "d3"}
    by_page = await store.search(
        "c", dense=q, sparse=None, k=5, mode="dense", filters={"page": Range(gte=2)}
    )
    assert [h.payload["chunk_index"] for h in by_page] == [1]


async def test_document_states_and_stale_chunk_removal(store: VectorStore) -> None:
    await _seed(store)
    states = await store.document_states("c")
    assert states["d1"].is_complete("h1")
    assert states["d1"].chunks == 2
    # d1 changes and shrinks to one chunk: the new chunk 0 overwrites, chunk 1 is stale.
    await store.upsert("c", [_point("d1", 0, 1, [1, 0, 0, 0], "apples only", h="h2")])
    assert not (await store.document_states("c"))["d1"].is_complete("h2")
    await store.delete_stale_chunks("c", "d1", "h2")
    state = (await store.document_states("c"))["d1"]
    assert state.is_complete("h2")
    assert state.chunks == 1


async def test_document_states_of_matching_chunks_only(store: VectorStore) -> None:
    await _seed(store)
    by_source = await store.document_states("c", {"source": ["/src/b.md", "/src/c.md"]})
    assert sorted(by_source) == ["d2", "d3"]
    firsts = await store.document_states("c", {"chunk_index": 0})
    assert sorted(firsts) == ["d1", "d2", "d3"]
    assert (firsts["d1"].chunks, firsts["d1"].expected_chunks) == (1, 2)
    assert await store.document_states("c", {"source": "/nowhere"}) == {}


async def test_delete_documents_and_stats(store: VectorStore) -> None:
    await _seed(store)
    stats = await store.stats("c")
    assert (stats.documents, stats.chunks) == (3, 4)
    await store.delete_documents("c", ["d1", "d3"])
    stats = await store.stats("c")
    assert (stats.documents, stats.chunks) == (1, 1)
    assert await store.list_collections() == ["c"]


async def test_count_with_and_without_filters(store: VectorStore) -> None:
    await _seed(store)
    assert await store.count("c") == 4
    assert await store.count("c", {"doc_id": "d1"}) == 2
    assert await store.count("c", {"doc_id": ["d2", "d3"], "page": Range(gte=1)}) == 0
    assert await store.count("c", {"doc_id": "nope"}) == 0
    with pytest.raises(CollectionNotFound):
        await store.count("missing")


@pytest.mark.parametrize("kind", ["edge", "server"])
async def test_reopening_with_another_vector_size_is_refused(kind: str, tmp_path: Path) -> None:
    first = _store(kind, tmp_path)
    await first.ensure_collection("c", create=True)
    await first.close()
    second = _store(kind, tmp_path, dim=8)
    try:
        with pytest.raises(SchemaMismatch, match=r"4-dim.*--collection"):
            await second.ensure_collection("c", create=False)
    finally:
        await second.close()
