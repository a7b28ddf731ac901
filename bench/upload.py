"""Adding one file to a large collection: what an upload (or `rag ingest FILE`) costs.

The collection holds N chunks (SciFact abstracts cut into 10-chunk documents, random unit
vectors: only the payloads matter here), indexed once and reused across runs. Side by side
in one run, median of --repeat:

- re-ingest an unchanged file, reading back the state of that file's documents only (the
  product) vs the whole collection's (the baseline: what every run did before);
- ingest a changed file (embedding, upsert, stale-chunk removal, index commit);
- list documents from their first chunks (the API) vs from every chunk.

    .venv/bin/python bench/upload.py --chunks 1000000 --out bench/results/upload.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.access import FULL_ACCESS

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import cpu_info, emit_report  # noqa: E402
from ingest.job import build_pipeline  # noqa: E402
from pipelines.core import build_core  # noqa: E402
from pipelines.identity import chunk_point_id, document_id  # noqa: E402
from pipelines.ports import VectorStore  # noqa: E402
from pipelines.settings import Settings  # noqa: E402
from pipelines.types import Chunk, EmbeddedChunk  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"
COLLECTION = "big"
CHUNKS_PER_DOC = 10


async def build_collection(store: VectorStore, data: Path, n: int, dim: int) -> None:
    if COLLECTION in await store.list_collections():
        if (await store.stats(COLLECTION, access=FULL_ACCESS)).chunks >= n:
            return
        await store.drop_collection(COLLECTION)
    texts = [json.loads(line)["text"] for line in (data / "corpus.jsonl").open()]
    rng = np.random.default_rng(0)
    await store.ensure_collection(COLLECTION, create=True)
    started = time.perf_counter()
    for start in range(0, n, 10_000):
        rows = range(start, min(n, start + 10_000))
        vecs = rng.standard_normal((len(rows), dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        points = []
        for row, vec in zip(rows, vecs, strict=True):
            doc, i = divmod(row, CHUNKS_PER_DOC)
            source = f"/corpus/doc{doc:07d}.txt"
            doc_id = document_id(COLLECTION, source)
            chunk = Chunk(
                chunk_id=chunk_point_id(doc_id, i),
                doc_id=doc_id,
                collection=COLLECTION,
                source=source,
                title=f"doc {doc}",
                text=texts[row % len(texts)],
                chunk_index=i,
                chunk_count=CHUNKS_PER_DOC,
                char_start=0,
                char_end=0,
                content_hash="synthetic",
            )
            points.append(EmbeddedChunk(chunk, vec.tolist(), None))
        await store.upsert(COLLECTION, points)
    await store.commit(COLLECTION)  # the HNSW index, once
    print(f"built {n} chunks in {time.perf_counter() - started:.0f}s", file=sys.stderr)


async def timed(fn: Any, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        runs.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(runs), 4), "min_s": round(min(runs), 4)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=200_000)
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/ragserve-bench-upload"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    settings = Settings(_env_file=None, data_dir=args.data_dir)  # type: ignore[call-arg]
    core = build_core(settings)
    store = core.store
    try:
        await build_collection(store, args.dataset, args.chunks, core.embedder.dim)
        doc = args.data_dir / "upload" / "notes.md"
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text("# Notes\n\n" + (REPO / "README.md").read_text()[:6000])
        by_source = build_pipeline(core, serving=True)
        full_scan = build_pipeline(core, serving=True)
        full_scan.state_lookup_max_files = 0
        await by_source.run([doc], COLLECTION)  # lands once; the runs below find it unchanged
        version = iter(range(1_000_000))

        async def changed() -> None:
            doc.write_text(doc.read_text() + f"\n\nRevision {next(version)}.\n")
            summary = await by_source.run([doc], COLLECTION)
            assert summary.updated == 1, summary

        report: dict[str, Any] = {
            "benchmark": "upload",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "chunks": (await store.stats(COLLECTION, access=FULL_ACCESS)).chunks,
            "documents": (await store.stats(COLLECTION, access=FULL_ACCESS)).documents,
            "cpus": os.cpu_count(),
            "cpu": cpu_info(),
            "unchanged_file": {
                "by_source": await timed(lambda: by_source.run([doc], COLLECTION), args.repeat),
                "full_scan_baseline": await timed(
                    lambda: full_scan.run([doc], COLLECTION), args.repeat
                ),
            },
            "changed_file": await timed(changed, args.repeat),
            "list_documents": {
                "first_chunks": await timed(
                    lambda: store.document_states(
                        COLLECTION, {"chunk_index": 0}, access=FULL_ACCESS
                    ),
                    args.repeat,
                ),
                "every_chunk_baseline": await timed(
                    lambda: store.document_states(COLLECTION, access=FULL_ACCESS), args.repeat
                ),
            },
        }
        u = report["unchanged_file"]
        u["speedup"] = round(u["full_scan_baseline"]["median_s"] / u["by_source"]["median_s"], 1)
    finally:
        await core.close()
    emit_report(report, args.out)


if __name__ == "__main__":
    asyncio.run(main())
