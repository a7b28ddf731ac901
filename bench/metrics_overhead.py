"""Instrumentation overhead (issue 17): `/v1/search` p50 and `/v1/ask/stream` tokens/s with the
metrics on and off, measured in one run (target: within 2 % either way).

Two servers, each its own process on 127.0.0.1 (a uvicorn server and an httpx client in one
event loop wait ~44 ms per request on loopback: docs/benchmarks.md), over copies of one
ingested corpus (samples/), each with the in-process vLLM engine (the bundled SmolLM2):

* `on` — the service as shipped: `PrometheusTelemetry` attached to the admission gate, the
  retrieval and the micro-batcher; vLLM keeping statistics for our stat logger; this process
  scrapes its `/metrics` every `--scrape-s` seconds meanwhile, as Prometheus would;
* `off` — the same app built with `create_app(metrics=False)` (NO_TELEMETRY everywhere, no
  /metrics) and vLLM's statistics off (`engine_stats=False`: the engine as before issue 17).

This process is only the client. The variants alternate request by request (one to each,
the first of the pair alternating), so drift and other load on the machine hit both alike;
the ratios of each round are reported beside the pooled figures. Searches are sequential
(one client: the per-request cost is what adds up); streams too (tokens/s of one stream,
from its first token to its last, temperature 0 so both servers generate the same text).

    .venv/bin/python bench/metrics_overhead.py --out bench/results/metrics-overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]  # psutil ships no type information

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    SAMPLE_QUESTIONS,
    cpu_info,
    emit_report,
    free_port,
    wait_http,
)

VARIANTS = ("on", "off")
QUESTIONS = SAMPLE_QUESTIONS


def log(line: str) -> None:
    print(f"[metrics-overhead {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# --- the server side (a child process per variant) ----------------------------------------


def serve(variant: str, port: int) -> None:
    """The service as `rag serve` builds it (settings from the environment, uvloop), with the
    generator started here so that `off` can start vLLM without statistics."""
    import logging

    import uvicorn

    from app.main import create_app
    from app.services import build_services
    from pipelines.generators.vllm_engine import VllmEngineGenerator
    from pipelines.settings import Settings

    settings = Settings()
    logging.basicConfig(level=logging.INFO)
    config = uvicorn.Config("app.main:create_app", host="127.0.0.1", port=port, log_level="warning")

    async def main() -> None:
        async with AsyncExitStack() as stack:
            services = await build_services(settings, stack, start_generator=False)
            generator = await VllmEngineGenerator.start(
                settings.llm, settings.model_dir, engine_stats=variant == "on"
            )
            stack.push_async_callback(generator.close)
            services.set_generator(generator)
            config.app = create_app(settings, services=services, metrics=variant == "on")
            await uvicorn.Server(config).serve()

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main())


@dataclass
class Server:
    variant: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """SIGTERM the process group (vLLM's engine core with it), SIGKILL what is left."""
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)
                return

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        return ""


def start_server(variant: str, data: Path, base: Path, model: str, stack: ExitStack) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(data),
        "RAG_EMBEDDING__CACHE_DIR": str(base / "embeddings"),
        "RAG_LLM__MODEL": model,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
    log_path = data.parent / f"{variant}.log"
    serve_as = server_variant(variant)
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", serve_as, "--port", str(port)]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(variant, f"http://127.0.0.1:{port}", proc, log_path)
    stack.callback(server.stop)
    return server


# --- the client side ------------------------------------------------------------------------


async def one_search(client: httpx.AsyncClient, query: str) -> float:
    started = time.perf_counter()
    r = await client.post("/v1/search", json={"query": query, "mode": "hybrid", "k": 5})
    elapsed = (time.perf_counter() - started) * 1000
    r.raise_for_status()
    return elapsed


async def one_stream(client: httpx.AsyncClient, question: str, max_tokens: int) -> dict[str, float]:
    """TTFT, and tokens/s from the first token event to the last (the decode rate a client
    sees); `tokens` counts the token events."""
    body = {"question": question, "max_tokens": max_tokens, "temperature": 0}
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    event = ""
    async with client.stream("POST", "/v1/ask/stream", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "token":
                last = time.perf_counter()
                first = first or last
                tokens += 1
            elif line.startswith("data:") and event == "error":
                raise RuntimeError(f"stream failed: {line}")
    rate = (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0
    return {"ttft_ms": (first - started) * 1000, "tokens": tokens, "tokens_per_s": rate}


async def scraper(client: httpx.AsyncClient, every_s: float, took: list[float]) -> None:
    """GET /metrics every `every_s`, as Prometheus would, for the whole run of `on`."""
    while True:
        started = time.perf_counter()
        r = await client.get("/metrics")
        r.raise_for_status()
        took.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(every_s)


def turn(i: int, variants: list[str]) -> list[str]:
    """The servers for the i-th request, one request each, the order rotating (on, off; off,
    on; …) so that no server always goes first."""
    k = i % len(variants)
    order = variants[k:] + variants[:k]
    return order if (i // len(variants)) % 2 == 0 else order[::-1]


def server_variant(name: str) -> str:
    """`off2`, the noise floor's second baseline, is served as `off`."""
    return name.rstrip("2")


def ratio(on: float, off: float) -> float:
    return round(on / off, 4) if off else float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds used so far by a server and its children (vLLM's engine core): what a
    request costs the machine, which other load on it does not inflate the way it does the
    wall time."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


async def measure(
    args: argparse.Namespace, urls: dict[str, str], pids: dict[str, int]
) -> dict[str, Any]:
    names = list(urls)
    cpu: dict[str, dict[str, float]] = {"search": {}, "stream": {}}
    clients = {v: httpx.AsyncClient(base_url=u, timeout=300) for v, u in urls.items()}
    scrapes: list[float] = []
    scraping = asyncio.create_task(scraper(clients["on"], args.scrape_s, scrapes))
    try:
        log("warm-up")
        for v in names:
            for i in range(args.warmup):
                await one_search(clients[v], QUESTIONS[i % len(QUESTIONS)])
            await one_stream(clients[v], QUESTIONS[0], 8)
        search: dict[str, list[float]] = {v: [] for v in names}
        search_rounds: list[float] = []
        cpu_before = {v: cpu_s(pids[v]) for v in names}
        for r in range(args.rounds):
            got: dict[str, list[float]] = {v: [] for v in names}
            for i in range(args.searches):
                for v in turn(i, names):
                    got[v].append(await one_search(clients[v], QUESTIONS[i % len(QUESTIONS)]))
            for v in names:
                search[v] += got[v]
            search_rounds.append(ratio(statistics.median(got["on"]), statistics.median(got["off"])))
            log(f"search round {r + 1}/{args.rounds}: p50 on/off {search_rounds[-1]}")
        cpu["search"] = {v: cpu_s(pids[v]) - cpu_before[v] for v in names}
        streams: dict[str, list[dict[str, float]]] = {v: [] for v in names}
        cpu_before = {v: cpu_s(pids[v]) for v in names}
        stream_rounds: list[float] = []
        for r in range(args.rounds):
            rows: dict[str, list[dict[str, float]]] = {v: [] for v in names}
            for i in range(args.streams):
                question = QUESTIONS[(r * args.streams + i) % len(QUESTIONS)]
                for v in turn(r * args.streams + i, names):
                    rows[v].append(await one_stream(clients[v], question, args.max_tokens))
            for v in names:
                streams[v] += rows[v]
            rates = {v: statistics.median(g["tokens_per_s"] for g in rows[v]) for v in names}
            stream_rounds.append(ratio(rates["on"], rates["off"]))
            ttft = {v: statistics.median(g["ttft_ms"] for g in rows[v]) for v in names}
            log(
                f"stream round {r + 1}/{args.rounds}: tokens/s on/off {stream_rounds[-1]}, "
                f"TTFT p50 on/off {ratio(ttft['on'], ttft['off'])}"
            )
        cpu["stream"] = {v: cpu_s(pids[v]) - cpu_before[v] for v in names}
        metrics_bytes = len((await clients["on"].get("/metrics")).content)
    finally:
        scraping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scraping
        for c in clients.values():
            await c.aclose()

    def search_figures(ms: list[float]) -> dict[str, float]:
        q = statistics.quantiles(ms, n=100)
        return {"n": len(ms), "p50_ms": round(statistics.median(ms), 3), "p99_ms": round(q[98], 3)}

    def stream_figures(rows: list[dict[str, float]]) -> dict[str, float]:
        return {
            "n": len(rows),
            "tokens_per_s_p50": round(statistics.median(r["tokens_per_s"] for r in rows), 3),
            "ttft_p50_ms": round(statistics.median(r["ttft_ms"] for r in rows), 1),
            "tokens_mean": round(statistics.fmean(r["tokens"] for r in rows), 1),
        }

    s = {v: search_figures(search[v]) for v in names}
    g = {v: stream_figures(streams[v]) for v in names}
    floor = {}
    if "off2" in names:  # two identical baselines: how far apart noise alone puts them
        floor = {
            "noise_floor_off2_off": {
                "search_p50": ratio(s["off2"]["p50_ms"], s["off"]["p50_ms"]),
                "tokens_per_s": ratio(g["off2"]["tokens_per_s_p50"], g["off"]["tokens_per_s_p50"]),
            }
        }
    return {
        "search": {
            **s,
            "p50_ratio_on_off": ratio(s["on"]["p50_ms"], s["off"]["p50_ms"]),
            "p50_ratio_per_round": search_rounds,
        },
        "stream": {
            **g,
            "tokens_per_s_ratio_on_off": ratio(
                g["on"]["tokens_per_s_p50"], g["off"]["tokens_per_s_p50"]
            ),
            "tokens_per_s_ratio_per_round": stream_rounds,
            "ttft_p50_ratio_on_off": ratio(g["on"]["ttft_p50_ms"], g["off"]["ttft_p50_ms"]),
        },
        **floor,
        # CPU ms per request (server process and its children; `on` includes its scrapes).
        "cpu_ms": {
            "per_search": {
                v: round(cpu["search"][v] * 1000 / max(1, len(search[v])), 3) for v in names
            },
            "per_stream": {
                v: round(cpu["stream"][v] * 1000 / max(1, len(streams[v])), 1) for v in names
            },
        },
        "scrape": {
            "every_s": args.scrape_s,
            "n": len(scrapes),
            "p50_ms": round(statistics.median(scrapes), 2) if scrapes else None,
            "bytes": metrics_bytes,
        },
    }


def call_costs(repeat: int = 20_000) -> dict[str, float]:
    """What the instrumentation itself costs per search, per token and per scrape, timed in
    this process (microseconds, and ms for a scrape): the bound the A/B figures above cannot
    resolve on a busy machine. A search makes 3 phase reports, one hits report and one batch
    report (hybrid: embed, search, total; no rerank) and ~8 clock reads; a token one gap
    report and one clock read."""
    from prometheus_client import generate_latest

    from app.metrics import PrometheusTelemetry

    t = PrometheusTelemetry()

    def per_call_us(fn: Any) -> float:
        for _ in range(1000):
            fn()
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - started) / repeat * 1e6

    def search() -> None:
        for _ in range(8):
            time.perf_counter()
        t.retrieval_phase("hybrid", "embed", 0.004)
        t.retrieval_phase("hybrid", "search", 0.004)
        t.retrieval_phase("hybrid", "total", 0.01)
        t.retrieval_hits("default", "hybrid", 5)
        t.batch("query", 1)

    def token() -> None:
        time.perf_counter()
        t.generation_token_gap("m", 0.05)

    def generation() -> None:
        t.generation_queued("m", 0.0)
        t.generation_first_token("m", 0.2)
        t.generation_ended("m", "stop", prompt_tokens=900, completion_tokens=48, seconds=3.0)

    costs = {
        "per_search_us": per_call_us(search),
        "per_token_us": per_call_us(token),
        "per_generation_us": per_call_us(generation),
    }
    scrape_s = time.perf_counter()
    for _ in range(200):
        generate_latest(t.registry)
    costs["per_scrape_ms"] = (time.perf_counter() - scrape_s) / 200 * 1000
    return {k: round(v, 3) for k, v in costs.items()}


async def ingest(data: Path, base: Path) -> None:
    from ingest.job import open_pipeline
    from pipelines.settings import EmbeddingSettings, Settings

    embedding = EmbeddingSettings(cache_dir=base / "embeddings")
    settings = Settings(_env_file=None, data_dir=data, embedding=embedding)
    async with open_pipeline(settings) as pipeline:
        await pipeline.run([REPO / "samples"], "default")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.generators.weights import resolve_model
    from pipelines.settings import BUNDLED_MODEL

    base = args.data_dir
    base.mkdir(parents=True, exist_ok=True)
    model = args.model or resolve_model(BUNDLED_MODEL, base / "models")
    load_at_start = os.getloadavg()
    began = time.perf_counter()
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="ragbench-metrics-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        log("ingesting samples/")
        asyncio.run(ingest(tmp / "corpus", base))
        servers = {}
        for v in [*VARIANTS, *(["off2"] if args.noise_floor else [])]:
            shutil.copytree(tmp / "corpus", tmp / v / "data")
            servers[v] = start_server(v, tmp / v / "data", base, model, stack)
        for v, server in servers.items():
            log(f"waiting for '{v}' (vLLM starting)")
            try:
                wait_http(server.url + "/readyz", server.proc, args.start_timeout)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{v} did not start ({exc}):\n{server.tail()}") from exc
        urls = {v: s.url for v, s in servers.items()}
        figures = asyncio.run(measure(args, urls, {v: s.proc.pid for v, s in servers.items()}))
    costs = call_costs()
    per_token_ms = 1000 / figures["stream"]["off"]["tokens_per_s_p50"]
    costs["share_of_search_p50"] = round(
        costs["per_search_us"] / 1000 / figures["search"]["off"]["p50_ms"], 5
    )
    costs["share_of_token_time"] = round(costs["per_token_us"] / 1000 / per_token_ms, 6)
    return {
        "benchmark": "metrics_overhead",
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_info(),
        "cores": os.cpu_count(),
        "load_avg_at_start": [round(x, 2) for x in load_at_start],
        "wall_s": round(time.perf_counter() - began, 1),
        "config": {
            "corpus": "samples",
            "model": model,
            "rounds": args.rounds,
            "searches_per_round": args.searches,
            "streams_per_round": args.streams,
            "max_tokens": args.max_tokens,
            "search_mode": "hybrid",
            "noise_floor": args.noise_floor,
        },
        **figures,
        "instrumentation_cost": costs,
        "target_ratio_band": [0.98, 1.02],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--searches", type=int, default=100, help="per variant and round")
    ap.add_argument("--streams", type=int, default=3, help="per variant and round")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=20, help="searches per variant first")
    ap.add_argument(
        "--scrape-s",
        type=float,
        default=5.0,
        help="GET /metrics of `on` this often (deploy/prometheus.yml: every 15 s)",
    )
    ap.add_argument("--model", default="", help="an HF model folder (default: bundled SmolLM2)")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "ragbench-metrics",
        help="converted weights and the embedder's export, reused between runs",
    )
    ap.add_argument("--start-timeout", type=float, default=600)
    ap.add_argument(
        "--noise-floor",
        action="store_true",
        help="a second `off` server too: off2/off is what noise alone gives",
    )
    ap.add_argument("--out", type=Path)
    ap.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    emit_report(run(args), args.out)


if __name__ == "__main__":
    main()
