"""Stores filled for tests: the sample documents through the real ingest job, and the small
hand-made collection the store contract tests run on both backends."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qdrant_client import AsyncQdrantClient

from ingest.job import build_pipeline
from ingest.pipeline import IngestSummary
from pipelines.access import GROUPS_FIELD
from pipelines.core import Core
from pipelines.identity import chunk_point_id
from pipelines.ports import VectorStore
from pipelines.ranking import HybridParams
from pipelines.sparse import QdrantBm25Encoder
from pipelines.stores.config import StoreConfig
from pipelines.stores.edge import EdgeStore
from pipelines.stores.server import QdrantServerStore
from pipelines.types import Chunk, EmbeddedChunk

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


async def ingest_samples(core: Core, collection: str = "default") -> IngestSummary:
    """The bundled sample documents (three files, four chunks) through the real ingest job."""
    return await build_pipeline(core).run([SAMPLES], collection)


DIM = 4


def contract_store(
    kind: str, root: Path, dim: int = DIM, hybrid: HybridParams | None = None
) -> VectorStore:
    """A store tuned like the product's (the settings' defaults), on either backend."""
    config = StoreConfig.from_settings(dim=dim, embedding_model="test")
    if hybrid is not None:
        config = replace(config, hybrid=hybrid)
    if kind == "edge":
        return EdgeStore(root / "edge", config)
    return QdrantServerStore(AsyncQdrantClient(path=str(root / "local")), config)


CONTRACT_BM25 = QdrantBm25Encoder()


def contract_point(
    doc: str,
    i: int,
    n: int,
    vec: list[float],
    text: str,
    h: str = "h1",
    source: str = "/src/a.txt",
    page: int | None = None,
    groups: tuple[str, ...] = (),
    legacy: bool = False,
) -> EmbeddedChunk:
    """`legacy`: a chunk as stored before access lists (no GROUPS_FIELD in its payload)."""
    chunk = (LegacyChunk if legacy else Chunk)(
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
        groups=groups,
    )
    return EmbeddedChunk(chunk, vec, CONTRACT_BM25.encode_documents([text])[0])


@dataclass(frozen=True)
class LegacyChunk(Chunk):
    """A chunk written by a version without access lists: its payload has no groups."""

    def payload(self) -> dict[str, Any]:
        payload = Chunk.payload(self)
        del payload[GROUPS_FIELD]
        return payload


async def seed_contract(store: VectorStore) -> None:
    await store.ensure_collection("c", create=True)
    await store.upsert(
        "c",
        [
            contract_point("d1", 0, 2, [1, 0, 0, 0], "apples and pears", page=1),
            contract_point("d1", 1, 2, [0.9, 0.1, 0, 0], "apple orchards in autumn", page=2),
            contract_point(
                "d2", 0, 1, [0, 1, 0, 0], "the history of steam engines", source="/src/b.md"
            ),
            contract_point(
                "d3", 0, 1, [0, 0, 1, 0], "quantum computing basics", source="/src/c.md"
            ),
        ],
    )
    await store.commit("c")


# The access-list collection: each document's id says who may read it.
ACL_DOCS: dict[str, tuple[str, ...]] = {
    "public": (),
    "hr": ("hr",),
    "finance": ("finance",),
    "hr-finance": ("finance", "hr"),
}
LEGACY_DOC = "legacy"  # stored before access lists: public


async def seed_acl(store: VectorStore) -> None:
    """Collection "c": a document per access list (two chunks each), and a legacy one; every
    chunk mentions the "payroll report" (sparse) and leans on the same dense direction."""
    points = []
    for n, (doc, groups) in enumerate([*ACL_DOCS.items(), (LEGACY_DOC, ())]):
        for i in range(2):
            vec = [1.0, 0.1 * n, 0.1 * i, 0.0]
            text = f"payroll report {doc} part {i}"
            points.append(
                contract_point(doc, i, 2, vec, text, groups=groups, legacy=doc == LEGACY_DOC)
            )
    await store.ensure_collection("c", create=True)
    await store.upsert("c", points)
    await store.commit("c")
