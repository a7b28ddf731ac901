"""Search latency per mode through POST /v1/search on loopback, beside HNSW recall@10 vs exact.

Builds (once, under --data-dir) a collection from a BEIR corpus with the product's ingest job,
starts `rag serve` on 127.0.0.1 (the product's server process), and sends the dataset's
queries one at a time per mode from this process. Recall@10 compares the store's top 10
with the same search made exact (`SearchParams(exact=True)`, original vectors, for the dense
side). `--synthetic N` adds a collection of N points made from the real chunk embeddings (each
a perturbed blend of two real chunks, with its source's text and sparse vector), to measure
at scale. Prints JSON; --out writes it too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipelines.access import FULL_ACCESS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.common import cpu_info, emit_report, free_port, wait_http  # noqa: E402
from pipelines.settings import Settings  # noqa: E402
from pipelines.types import SEARCH_MODES, Chunk, EmbeddedChunk, SearchMode, SparseVector  # noqa: E402

MODES: tuple[SearchMode, ...] = SEARCH_MODES
log = logging.getLogger("bench.search")


def _percentiles(ms: list[float]) -> dict[str, float]:
    qs = np.percentile(np.array(ms), [50, 90, 99])
    return {
        "p50_ms": round(float(qs[0]), 2),
        "p90_ms": round(float(qs[1]), 2),
        "p99_ms": round(float(qs[2]), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


async def _ensure_ingested(settings: Settings, corpus: Path, collection: str) -> None:
    from ingest.job import build_pipeline
    from pipelines.core import open_core

    async with open_core(settings) as core:
        if collection in await core.store.list_collections():
            return
        log.warning("ingesting %s into %s (once)", corpus, collection)
        summary = await build_pipeline(core).run([corpus], collection)
        log.warning("ingested %d chunks in %.0fs", summary.chunks, summary.seconds)


async def _build_synthetic(settings: Settings, source: str, target: str, n: int, seed: int) -> None:
    """N points near the real chunk embeddings: normalize(a*x_i + (1-a)*x_j + noise)."""
    import qdrant_edge as qe

    from pipelines.embedder import build_embedder
    from pipelines.stores.config import StoreConfig
    from pipelines.stores.edge import EdgeStore
    from pipelines.stores.schema import DENSE, SPARSE

    embedder = build_embedder(settings)
    dim = embedder.dim
    config = StoreConfig.from_settings(
        settings.qdrant, settings.retrieval, dim=dim, embedding_model=embedder.name
    )
    store = EdgeStore(settings.qdrant_dir, config)
    try:
        if (
            target in await store.list_collections()
            and (await store.stats(target, access=FULL_ACCESS)).chunks >= n
        ):
            return
        await store.drop_collection(target)
        await store.ensure_collection(source, create=False)
        shard = store.shards.shard(source)
        ids, vecs, sparse, payloads = [], [], [], []
        offset: Any = None
        while True:
            recs, offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=1024, with_payload=True, with_vector=True)
            )
            for r in recs:
                vec = r.vector if isinstance(r.vector, dict) else {}
                ids.append(str(r.id))
                vecs.append(vec[DENSE])
                sv: Any = vec.get(SPARSE)
                sparse.append(SparseVector(list(sv.indices), list(sv.values)) if sv else None)
                payloads.append(dict(r.payload or {}))
            if offset is None:
                break
        real = np.asarray(vecs, dtype=np.float32)
        rng = np.random.default_rng(seed)
        # Per-dimension spread of the real vectors sets the noise scale (not isotropic noise).
        spread = real.std(axis=0)
        await store.ensure_collection(target, create=True)
        started = time.perf_counter()
        batch = 2048
        for start in range(0, n, batch):
            m = min(batch, n - start)
            i = rng.integers(0, len(real), m)
            j = rng.integers(0, len(real), m)
            a = rng.uniform(0.7, 1.0, (m, 1)).astype(np.float32)
            v = a * real[i] + (1 - a) * real[j] + 0.35 * spread * rng.standard_normal((m, dim))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            points = []
            for row in range(m):
                src = int(i[row])
                pl = payloads[src]
                chunk = Chunk(
                    chunk_id=f"{start + row:08d}-0000-5000-8000-{src:012d}",
                    doc_id=f"syn-{start + row}",
                    collection=target,
                    source=str(pl.get("source", "")),
                    title=str(pl.get("title", "")),
                    text=str(pl.get("text", "")),
                    chunk_index=0,
                    chunk_count=1,
                    char_start=0,
                    char_end=0,
                    content_hash="synthetic",
                    metadata={"origin": ids[src]},
                )
                points.append(EmbeddedChunk(chunk, v[row].tolist(), sparse[src]))
            await store.upsert(target, points)
            if (start // batch) % 50 == 0:
                log.warning("synthetic: %d/%d points", start + m, n)
        log.warning("synthetic upsert %.0fs; building the index", time.perf_counter() - started)
        started = time.perf_counter()
        await store.commit(target)
        log.warning("index built in %.0fs", time.perf_counter() - started)
    finally:
        await store.close()


def _client(url: str, collection: str, queries: list[str], warmup: list[str]) -> dict[str, Any]:
    """The load generator: sequential requests per mode on one keep-alive connection of the
    standard library's HTTP client (~0.3 ms per request of its own); every path is warmed
    before any is timed. The same requests through httpx (a heavier client, ~1 ms of its
    own, as used by the OpenAI SDK) are recorded beside them as `httpx_p50_ms`."""
    import http.client
    from urllib.parse import urlsplit

    import httpx

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    headers = {"Content-Type": "application/json"}

    def post(body: dict[str, Any]) -> dict[str, Any]:
        conn.request("POST", "/v1/search", body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"/v1/search answered {response.status}: {data[:200]!r}")
        result: dict[str, Any] = json.loads(data)
        return result

    out: dict[str, Any] = {}
    try:
        for mode in MODES:
            for q in warmup:
                post({"collection": collection, "k": 10, "mode": mode, "query": q})
        for mode in MODES:
            body = {"collection": collection, "k": 10, "mode": mode}
            client_ms, server_ms = [], []
            for q in queries:
                started = time.perf_counter()
                result = post({**body, "query": q})
                client_ms.append((time.perf_counter() - started) * 1000)
                server_ms.append(float(result["latency_ms"]))
            out[mode] = {
                **_percentiles(client_ms),
                "server_p50_ms": round(float(np.percentile(server_ms, 50)), 2),
            }
    finally:
        conn.close()
    with httpx.Client(base_url=url, timeout=30) as c:
        for mode in MODES:
            body = {"collection": collection, "k": 10, "mode": mode}
            httpx_ms = []
            for q in queries:
                started = time.perf_counter()
                c.post("/v1/search", json={**body, "query": q}).raise_for_status()
                httpx_ms.append((time.perf_counter() - started) * 1000)
            out[mode]["httpx_p50_ms"] = round(float(np.percentile(httpx_ms, 50)), 2)
    return out


def _latency(
    settings: Settings, collection: str, queries: list[str], warmup: list[str]
) -> dict[str, Any]:
    """Sequential POST /v1/search per mode against `rag serve` on loopback: the product's own
    server process (uvicorn on uvloop, one embedder, the store opened by the app), with no
    LLM behind it (search does not wait for one); the client is this process."""
    port = free_port()
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(settings.data_dir),
        # Nothing listens on the discard port: the generator reports down, search serves.
        "RAG_LLM__BASE_URL": "http://127.0.0.1:9",
    }
    cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", server, 300)
        return _client(url, collection, queries, warmup)
    finally:
        server.terminate()
        server.wait(30)


def _edge_store(
    settings: Settings,
    embedder: Any,
    *,
    ef: int,
    exact: bool,
    quantization: Literal["int8", "none"] | None = None,
) -> Any:
    """The embedded store as the product opens it, with this search-time ef / exact search
    (and quantization: "none" searches the original vectors of an int8 collection)."""
    from dataclasses import replace

    from pipelines.stores.config import StoreConfig
    from pipelines.stores.edge import EdgeStore

    config = StoreConfig.from_settings(
        settings.qdrant, settings.retrieval, dim=embedder.dim, embedding_model=embedder.name
    )
    config = replace(
        config, hnsw_ef=ef, exact=exact, quantization=quantization or config.quantization
    )
    return EdgeStore(settings.qdrant_dir, config)


async def _recall(settings: Settings, collection: str, queries: list[str]) -> dict[str, Any]:
    """Top-10 overlap of the product's search with the same search made exact."""
    from pipelines.embedder import build_embedder
    from pipelines.sparse import QdrantBm25Encoder

    embedder = build_embedder(settings)
    sparse = QdrantBm25Encoder.from_settings(settings.retrieval)
    dense_vecs = embedder.embed_queries(queries)
    results: dict[str, list[list[str]]] = {}
    out: dict[str, Any] = {}
    for exact in (False, True):
        store = _edge_store(settings, embedder, ef=settings.qdrant.hnsw_ef, exact=exact)
        try:
            for mode in MODES:
                ranked = []
                for text, dense in zip(queries, dense_vecs, strict=True):
                    hits = await store.search(
                        collection,
                        dense=dense if mode != "sparse" else None,
                        sparse=sparse.encode_query(text) if mode != "dense" else None,
                        k=10,
                        mode=mode,
                        access=FULL_ACCESS,
                    )
                    ranked.append([h.chunk_id for h in hits])
                results[f"{mode}/{exact}"] = ranked
        finally:
            await store.close()
    for mode in MODES:
        approx, exact_ids = results[f"{mode}/False"], results[f"{mode}/True"]
        overlap = [
            len(set(a) & set(e)) / max(len(e), 1) for a, e in zip(approx, exact_ids, strict=True)
        ]
        out[mode] = round(statistics.fmean(overlap), 4)
    return out


async def _ef_sweep(
    settings: Settings, collection: str, queries: list[str], efs: list[int]
) -> dict[str, Any]:
    """Dense store latency (in-process, embedding excluded) and recall@10 vs exact per ef, with
    the int8 vectors (rescored) and with the original vectors only."""
    from pipelines.embedder import build_embedder

    embedder = build_embedder(settings)
    vectors = embedder.embed_queries(queries)
    runs: dict[str, list[list[str]]] = {}
    out: dict[str, Any] = {}
    storage: tuple[Literal["int8", "none"], ...] = ("int8", "none")
    variants = [("exact", 1, storage[1])] + [(f"ef={ef}/{q}", ef, q) for ef in efs for q in storage]
    for name, ef, quantization in variants:
        store = _edge_store(
            settings, embedder, ef=ef, exact=name == "exact", quantization=quantization
        )
        try:
            ms, ranked = [], []
            for v in vectors:
                started = time.perf_counter()
                hits = await store.search(
                    collection, dense=v, sparse=None, k=10, mode="dense", access=FULL_ACCESS
                )
                ms.append((time.perf_counter() - started) * 1000)
                ranked.append([h.chunk_id for h in hits])
        finally:
            await store.close()
        runs[name] = ranked
        overlap = [
            len(set(a) & set(e)) / max(len(e), 1)
            for a, e in zip(ranked, runs["exact"], strict=True)
        ]
        out[name] = {**_percentiles(ms), "recall@10_vs_exact": round(statistics.fmean(overlap), 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/scifact")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/ragserve-bench-search"))
    ap.add_argument("--collection", default="scifact")
    ap.add_argument("--queries", type=int, default=300, help="how many of the dataset's queries")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--synthetic", type=int, default=0, help="also N synthetic points")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--ef-sweep",
        default="",
        help="comma-separated hnsw_ef values: dense store latency and recall per ef",
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")

    settings = Settings(_env_file=None, data_dir=args.data_dir)
    with (args.dataset / "queries.jsonl").open() as fh:
        every = [json.loads(line)["text"] for line in fh if line.strip()]
    queries = every[: args.queries]
    # Warm-up queries come from the end of the file: not the timed ones, so a warm cache
    # is a cache of the index, not of these exact queries' paths.
    warm = every[args.queries :][-args.warmup :] if args.warmup else []

    async def run() -> dict[str, Any]:
        await _ensure_ingested(settings, args.dataset / "corpus.jsonl", args.collection)
        targets = [args.collection]
        if args.synthetic:
            target = f"{args.collection}-syn{args.synthetic}"
            await _build_synthetic(settings, args.collection, target, args.synthetic, args.seed)
            targets.append(target)
        report: dict[str, Any] = {
            "settings": {
                "hnsw_m": settings.qdrant.hnsw_m,
                "hnsw_ef_construct": settings.qdrant.hnsw_ef_construct,
                "hnsw_ef": settings.qdrant.hnsw_ef,
                "quantization": settings.qdrant.quantization,
                "oversampling": settings.qdrant.oversampling,
                "rescore_candidates": settings.qdrant.rescore_candidates,
                "prefetch": settings.retrieval.prefetch,
                "fusion": settings.retrieval.fusion,
            },
            "queries": len(queries),
            "cpus": os.cpu_count(),
            "cpu": cpu_info(),
            "collections": {},
        }
        for name in targets:
            from pipelines.core import open_core

            async with open_core(settings) as core:
                stats = await core.store.stats(name, access=FULL_ACCESS)
            latency = await asyncio.to_thread(_latency, settings, name, queries, warm)
            recall = await _recall(settings, name, queries)
            report["collections"][name] = {
                "points": stats.chunks,
                "modes": {m: {**latency[m], "recall@10_vs_exact": recall[m]} for m in MODES},
            }
            if args.ef_sweep:
                efs = [int(x) for x in args.ef_sweep.split(",")]
                report["collections"][name]["dense_ef_sweep"] = await _ef_sweep(
                    settings, name, queries, efs
                )
        return report

    report = asyncio.run(run())
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
