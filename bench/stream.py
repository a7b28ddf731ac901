"""Streaming benchmark: TTFT and tokens/s through /v1/ask/stream vs the same prompts sent
straight to the same vLLM OpenAI server, for N concurrent streams, in one run.

    .venv/bin/python bench/stream.py --out bench/results/stream.json

It starts a vLLM OpenAI server (the bundled SmolLM2 unless --model), ingests samples/ into a
temp data dir, starts `rag serve` against that server, and measures both paths with the
identical prompts (built by the same chain code the service uses). Then `--pairs` single
requests sent both ways back to back give the service's added TTFT per pair (the medians of
separate rounds differ by more than that from prefill noise alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pipelines.access import FULL_ACCESS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    SAMPLE_QUESTIONS,
    cpu_info,
    emit_report,
    free_port,
    wait_http,
)

QUESTIONS = SAMPLE_QUESTIONS


async def one_service(
    client: httpx.AsyncClient, question: str, max_tokens: int
) -> dict[str, float]:
    t0 = time.perf_counter()
    ttft = None
    tokens = 0
    retrieval = 0.0
    body = {"question": question, "max_tokens": max_tokens, "temperature": 0}
    async with client.stream("POST", "/v1/ask/stream", json=body) as r:
        r.raise_for_status()
        event = ""
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "token":
                if ttft is None:
                    ttft = time.perf_counter() - t0
                tokens += 1
            elif line.startswith("data:") and event == "done":
                retrieval = json.loads(line[5:])["latency_ms"]["retrieval"] / 1000
    total = time.perf_counter() - t0
    return {"ttft": ttft or total, "total": total, "tokens": tokens, "retrieval": retrieval}


async def one_direct(
    client: httpx.AsyncClient, model: str, messages: list[dict[str, str]], max_tokens: int
) -> dict[str, float]:
    t0 = time.perf_counter()
    ttft = None
    tokens = 0
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            delta = json.loads(line[5:])["choices"]
            if delta and delta[0]["delta"].get("content"):
                if ttft is None:
                    ttft = time.perf_counter() - t0
                tokens += 1
    total = time.perf_counter() - t0
    return {"ttft": ttft or total, "total": total, "tokens": tokens, "retrieval": 0.0}


def summarize(runs: list[dict[str, float]], wall: float) -> dict[str, float]:
    ttfts = sorted(r["ttft"] for r in runs)
    return {
        "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1),
        "ttft_max_ms": round(ttfts[-1] * 1000, 1),
        "retrieval_p50_ms": round(statistics.median(r["retrieval"] for r in runs) * 1000, 1),
        "tokens": int(sum(r["tokens"] for r in runs)),
        "tokens_per_s": round(sum(r["tokens"] for r in runs) / wall, 2),
        "wall_s": round(wall, 2),
    }


async def prompts_for(
    questions: list[str], data_dir: Path, base_url: str, model: str
) -> list[list[dict[str, str]]]:
    """The exact messages the service sends upstream, built by the same chain code."""
    os.environ["RAG_DATA_DIR"] = str(data_dir)
    from pipelines.chain import AskInput, RagChain
    from pipelines.core import open_core
    from pipelines.generators.openai_server import OpenAIServerGenerator
    from pipelines.settings import Settings
    from pipelines.types import ChatMessage

    settings = Settings(llm={"base_url": base_url, "model": model})  # type: ignore[arg-type]
    out = []
    # The store is closed on the way out: the service process opens the shard after this.
    async with open_core(settings) as core:
        generator = OpenAIServerGenerator(settings.llm)
        chain = RagChain(core.retrieval, generator)
        try:
            for q in questions:
                prompt = await chain.prompt(
                    AskInput(
                        messages=[ChatMessage("user", q)],
                        collection="default",
                        max_tokens=64,
                        access=FULL_ACCESS,
                    )
                )
                out.append([{"role": m.role, "content": m.content} for m in prompt.messages])
        finally:
            await generator.close()
    return out


async def measure(
    args: argparse.Namespace,
    service_url: str,
    vllm_url: str,
    model: str,
    prompts: list[list[dict[str, str]]],
) -> list[dict[str, Any]]:
    results = []
    limits = httpx.Limits(max_connections=64)
    timeout = httpx.Timeout(600)
    async with (
        httpx.AsyncClient(base_url=service_url, limits=limits, timeout=timeout) as svc,
        httpx.AsyncClient(base_url=vllm_url, limits=limits, timeout=timeout) as direct,
    ):
        await one_service(svc, QUESTIONS[0], 4)  # warm both paths
        await one_direct(direct, model, prompts[0], 4)
        for n, r in ((n, r) for n in args.concurrency for r in range(args.rounds)):
            idx = [i % len(QUESTIONS) for i in range(n)]
            # Alternate which path goes first: neither always meets a warmer engine.
            for path in ("direct", "service") if r % 2 == 0 else ("service", "direct"):
                t0 = time.perf_counter()
                if path == "service":
                    runs = await asyncio.gather(
                        *(one_service(svc, QUESTIONS[i], args.max_tokens) for i in idx)
                    )
                else:
                    runs = await asyncio.gather(
                        *(one_direct(direct, model, prompts[i], args.max_tokens) for i in idx)
                    )
                row = {
                    "concurrency": n,
                    "round": r,
                    "path": path,
                    **summarize(list(runs), time.perf_counter() - t0),
                }
                print(json.dumps(row), file=sys.stderr)
                results.append(row)
    return results


async def measure_pairs(
    args: argparse.Namespace,
    service_url: str,
    vllm_url: str,
    model: str,
    prompts: list[list[dict[str, str]]],
) -> list[float]:
    """One stream at a time, each question sent both ways back to back (alternating which goes
    first): the service's TTFT minus its retrieval minus the direct TTFT, per pair (ms)."""
    diffs = []
    n_tokens = 8  # only the first token is timed here
    timeout = httpx.Timeout(600)
    async with (
        httpx.AsyncClient(base_url=service_url, timeout=timeout) as svc,
        httpx.AsyncClient(base_url=vllm_url, timeout=timeout) as direct,
    ):
        for p in range(args.pairs):
            i = p % len(QUESTIONS)
            if p % 2 == 0:
                d = await one_direct(direct, model, prompts[i], n_tokens)
                s = await one_service(svc, QUESTIONS[i], n_tokens)
            else:
                s = await one_service(svc, QUESTIONS[i], n_tokens)
                d = await one_direct(direct, model, prompts[i], n_tokens)
            diffs.append(round((s["ttft"] - s["retrieval"] - d["ttft"]) * 1000, 2))
    return diffs


def _median_row(rows: list[dict[str, Any]], n: int, path: str) -> dict[str, float]:
    mine = [r for r in rows if r["concurrency"] == n and r["path"] == path]
    keys = ("ttft_p50_ms", "retrieval_p50_ms", "tokens_per_s")
    return {k: statistics.median(float(r[k]) for r in mine) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="rounds per concurrency (medians)")
    ap.add_argument(
        "--pairs", type=int, default=32, help="paired single-stream requests for added TTFT"
    )
    ap.add_argument("--model", default=None, help="HF model dir/name (default: bundled)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from pipelines.generators.vllm_engine import auto_cpu_dtype
    from pipelines.generators.weights import resolve_model
    from pipelines.settings import BUNDLED_MODEL, Settings

    # The dtype the product's in-process engine would pick (float32 on CPUs without bf16).
    dtype = "auto" if torch.cuda.is_available() else auto_cpu_dtype()

    model_path = args.model or resolve_model(BUNDLED_MODEL, Settings().model_dir)
    served = "bench-model"
    tmp = Path(tempfile.mkdtemp(prefix="ragbench-"))
    vllm_port, svc_port = free_port(), free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    with (tmp / "vllm.log").open("wb") as log:
        vllm = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                model_path,
                "--served-model-name",
                served,
                "--enforce-eager",
                "--dtype",
                dtype,
                # Both paths send the same prompts: a prefix cache would let the second
                # path reuse the first one's prefill and flatter it.
                "--no-enable-prefix-caching",
                "--max-model-len",
                "2048",
                "--host",
                "127.0.0.1",
                "--port",
                str(vllm_port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    svc = None
    try:
        rag_env = {
            **os.environ,
            "RAG_DATA_DIR": str(tmp / "data"),
            "RAG_LLM__BASE_URL": f"http://127.0.0.1:{vllm_port}",
            "RAG_LLM__MODEL": served,
        }
        subprocess.run(
            [sys.executable, "-m", "app.cli", "ingest", str(REPO / "samples")],
            env=rag_env,
            check=True,
            cwd=REPO,
            capture_output=True,
        )
        wait_http(f"http://127.0.0.1:{vllm_port}/health", vllm, 600)
        vllm_url = f"http://127.0.0.1:{vllm_port}"
        prompts = asyncio.run(prompts_for(QUESTIONS, tmp / "data", vllm_url, served))
        with (tmp / "service.log").open("wb") as log:
            svc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(svc_port)],
                env=rag_env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        service_url = f"http://127.0.0.1:{svc_port}"
        wait_http(service_url + "/readyz", svc, 120)
        for _ in range(120):  # the generator client comes up right after the store
            if httpx.get(service_url + "/readyz").json()["details"]["generator"] == "ready":
                break
            time.sleep(0.5)
        rows = asyncio.run(measure(args, service_url, vllm_url, served, prompts))
        pairs = asyncio.run(measure_pairs(args, service_url, vllm_url, served, prompts))
    finally:
        for p in (svc, vllm):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()

    comparison = []
    for n in args.concurrency:
        d = _median_row(rows, n, "direct")
        s = _median_row(rows, n, "service")
        comparison.append(
            {
                "concurrency": n,
                "added_ttft_beyond_retrieval_ms": round(
                    s["ttft_p50_ms"] - s["retrieval_p50_ms"] - d["ttft_p50_ms"], 1
                ),
                "throughput_ratio": round(s["tokens_per_s"] / d["tokens_per_s"], 3)
                if d["tokens_per_s"]
                else None,
            }
        )
    report = {
        "benchmark": "stream",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "cpu": cpu_info(),
        "model": model_path,
        "dtype": dtype,
        "max_tokens": args.max_tokens,
        "rows": rows,
        "comparison": comparison,
        "paired_single_stream": {
            "pairs": len(pairs),
            "added_ttft_beyond_retrieval_ms": {
                "p25": round(float(np.percentile(pairs, 25)), 1),
                "median": round(statistics.median(pairs), 1),
                "p75": round(float(np.percentile(pairs, 75)), 1),
                "mean": round(statistics.fmean(pairs), 1),
            },
            "per_pair_ms": pairs,
        },
        "targets": {"added_ttft_ms_max": 5, "throughput_ratio_min": 0.95},
    }
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
