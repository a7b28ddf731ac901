"""Load benchmark (issue 16): the service under concurrent clients, side by side in one run.

Every server under test is its own process on 127.0.0.1 (a `rag serve`, or the same app
without a generator for search-only runs); this process is only the load generator
(httpx.AsyncClient). A uvicorn server and an httpx client in one event loop wait ~44 ms per
request on loopback here, which would drown every figure below.

Scenarios (`--scenarios`, all by default; sizes are flags so a quick run is possible):

* `mixed` — N requests from C closed-loop clients, a seeded mix of `/v1/search` (dense,
  sparse, hybrid), `/v1/ask`, `/v1/ask/stream`, `/v1/chat/completions` (JSON and stream),
  generation by the in-process vLLM: p50/p99 per route, 429s (each must carry
  `Retry-After`), every other error (must be 0), server RSS and its children's (vLLM's engine
  core) before and after.
* `batching` — `/v1/search` at 1, 16, 64 clients, query micro-batching on
  (`RAG_EMBEDDING__QUERY_BATCH_MAX=64`) and off (`=1`): two servers up at once, the levels
  interleaved between them; requests/s and p50/p99 per level.
* `saturated` — `/v1/search` p99 idle, then while streams fill `RAG_LLM__MAX_CONCURRENT`
  and its queue (same server, same search load).
* `peer` — a vLLM OpenAI server; ours (`RAG_LLM__BASE_URL`) and the plain recipe
  (`bench/peer_baseline.py`, both of its relays) streaming from it at 1, 8, 32, 64 concurrent
  streams, the exact prompts our chain builds: TTFT, and a `/healthz` probe on the same app
  while the streams run (the event loop's stall). An app sustains a level when the probe's
  p99 stays under `--stall-ms` and every stream ends.

The corpus (SciFact from ../shared/data, or samples/) is ingested once under `--data-dir`
and copied per server (each opens its own Qdrant Edge shard); the embedder's export and the
LLM weights are shared. Prints JSON, writes it to --out after every scenario, a progress line
on stderr while a phase runs.

    .venv/bin/python bench/load.py --out bench/results/load.json
    .venv/bin/python bench/load.py --corpus samples --mixed-requests 100 --mixed-clients 8 \
        --batching-levels 1 4 16 --batching-requests 40 --batching-rounds 1 \
        --sat-search-requests 60 --peer-levels 1 4 --peer-max-tokens 8 --out /tmp/load-small.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
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

SCENARIOS = ("mixed", "batching", "saturated", "peer")
SEARCH_MODES = ("dense", "sparse", "hybrid")
GEN_ROUTES = ("ask", "ask_stream", "chat", "chat_stream")
PEER_APPS = ("ours", "peer_threadpool", "peer_inline")
SERVED_MODEL = "bench-model"

StreamKind = Literal["none", "ask", "chat", "peer"]


def log(line: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# --- servers -------------------------------------------------------------------------------


@dataclass
class Server:
    """A server process under test, in its own process group (vLLM spawns engine processes:
    stopping the group stops them too)."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def memory(self) -> dict[str, float]:
        """RSS of the server process and of its children (vLLM's engine core), in MiB."""
        try:
            proc = psutil.Process(self.proc.pid)
            own = float(proc.memory_info().rss)
            kids = proc.children(recursive=True)
        except psutil.Error:
            return {}
        kid_rss = 0.0
        for kid in kids:
            with contextlib.suppress(psutil.Error):
                kid_rss += float(kid.memory_info().rss)
        mib = 2.0**20
        return {
            "server_rss_mb": round(own / mib, 1),
            "children_rss_mb": round(kid_rss / mib, 1),
            "children": len(kids),
            "total_rss_mb": round((own + kid_rss) / mib, 1),
        }

    def wait_ready(self, timeout: float, *, generator: bool) -> None:
        """Until /readyz answers (and, with `generator`, the generator is ready)."""
        deadline = time.monotonic() + timeout
        try:
            wait_http(self.url + "/readyz", self.proc, timeout)
            while generator:
                state = httpx.get(self.url + "/readyz", timeout=5).json()["details"]["generator"]
                if state == "ready":
                    break
                if state == "failed" or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: generator {state}")
                time.sleep(1)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{self.name} did not start ({exc}):\n{self.tail()}") from exc

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the group (the server shuts its engine down), SIGKILL what is left."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@dataclass
class Corpus:
    """The ingested base data dir and what the servers share of it."""

    data: Path  # copied per server
    embeddings: Path  # the embedder's exports, shared (file-locked by the product)
    queries: list[str]
    label: str
    model_path: str = ""  # the LLM's HF folder, once a generating scenario needs it


class Bench:
    """Starts servers over copies of the corpus and stops every one of them on exit."""

    def __init__(self, args: argparse.Namespace, corpus: Corpus, stack: ExitStack) -> None:
        self.args = args
        self.corpus = corpus
        self.stack = stack
        self.tmp = Path(tempfile.mkdtemp(prefix="ragbench-load-"))
        stack.callback(shutil.rmtree, self.tmp, ignore_errors=True)

    def env(self, data: Path, extra: dict[str, str]) -> dict[str, str]:
        env = {
            **os.environ,
            "RAG_DATA_DIR": str(data),
            "RAG_EMBEDDING__CACHE_DIR": str(self.corpus.embeddings),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
        }
        if self.corpus.model_path:
            env["RAG_LLM__MODEL"] = self.corpus.model_path
        env.update(extra)
        return env

    def copy_data(self, name: str) -> Path:
        target = self.tmp / name
        shutil.copytree(self.corpus.data, target)
        return target

    def launch(self, name: str, argv: list[str], env: dict[str, str]) -> Server:
        port = free_port()
        log_path = self.tmp / f"{name}.log"
        with log_path.open("wb") as fh:
            proc = subprocess.Popen(
                [*argv, "--port", str(port)],
                env=env,
                cwd=REPO,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(name, f"http://127.0.0.1:{port}", proc, log_path)
        self.stack.callback(server.stop)
        return server

    def rag_server(self, name: str, extra: dict[str, str], *, generator: bool = True) -> Server:
        """`rag serve` (with its generator), or the same app without one (search only)."""
        env = self.env(self.copy_data(name), extra)
        if generator:
            argv = [sys.executable, "-m", "app.cli", "serve"]
        else:
            argv = [sys.executable, str(Path(__file__).resolve()), "--serve-without-generator"]
        return self.launch(name, argv, env)


def serve_without_generator(port: int) -> None:
    """The service as `rag serve` builds it, minus the generator: the search-only servers of
    the batching scenario need no LLM, and `rag serve` always starts one."""
    import logging

    import uvicorn

    from app.main import create_app
    from app.services import build_services
    from pipelines.settings import Settings

    settings = Settings()
    logging.getLogger().setLevel(logging.INFO)
    config = uvicorn.Config("app.main:create_app", host="127.0.0.1", port=port, log_level="info")

    async def main() -> None:
        async with AsyncExitStack() as stack:
            services = await build_services(settings, stack, start_generator=False)
            config.app = create_app(settings, services=services)
            await uvicorn.Server(config).serve()

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # uvloop, as rag serve
        runner.run(main())


# --- one request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    route: str
    path: str
    body: dict[str, Any]
    stream: StreamKind = "none"


@dataclass
class Outcome:
    """One request as the client saw it. `error` None and status 200: answered; status 429
    with `retry_after`: rejected as designed; anything else counts as an error."""

    route: str
    status: int
    ms: float
    ttft_ms: float | None = None
    tokens: int = 0
    max_gap_ms: float = 0.0
    retry_after: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    @property
    def rejected(self) -> bool:
        return self.status == 429


def _error_code(body: bytes | str) -> str:
    try:
        data = json.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            return str(error.get("code") or error.get("type") or "?")
        return str(data.get("detail", "?"))[:80] if isinstance(data, dict) else "?"
    except ValueError:
        return str(body[:80])


def _answered(call: Call, r: httpx.Response, body: bytes, started: float) -> Outcome:
    ms = (time.perf_counter() - started) * 1000
    if r.status_code == 200:
        return Outcome(call.route, 200, ms)
    if r.status_code == 429:
        retry_after = r.headers.get("retry-after")
        problem = None if retry_after is not None else "429 without Retry-After"
        return Outcome(call.route, 429, ms, retry_after=retry_after, error=problem)
    return Outcome(call.route, r.status_code, ms, error=f"{r.status_code} {_error_code(body)}")


async def _read_stream(
    call: Call, r: httpx.Response, started: float, on_first: Callable[[], None] | None
) -> Outcome:
    """Reads a 200 stream to its end: tokens, time to the first, the longest gap between two,
    and whether it ended with its terminal event (a `done` event or `data: [DONE]`)."""
    out = Outcome(call.route, 200, 0.0)
    event, done, last = "", False, 0.0
    async for line in r.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
            continue
        if not line.startswith("data:"):
            continue  # blank separators, `: ping` comments, ids
        data = line[5:].strip()
        token = False
        if call.stream == "ask":
            token = event == "token"
            if event == "error":
                out.error = f"stream error {_error_code(data)}"
            done = done or event == "done"
        elif data == "[DONE]":
            done = True
        else:
            obj = json.loads(data)
            if "error" in obj:
                out.error = f"stream error {_error_code(data)}"
            elif call.stream == "peer":
                token = bool(obj.get("text"))
            else:
                choices = obj.get("choices") or []
                token = bool(choices and (choices[0].get("delta") or {}).get("content"))
        if token:
            now = time.perf_counter()
            if out.ttft_ms is None:
                out.ttft_ms = (now - started) * 1000
                if on_first is not None:
                    on_first()
            else:
                out.max_gap_ms = max(out.max_gap_ms, (now - last) * 1000)
            last = now
            out.tokens += 1
    out.ms = (time.perf_counter() - started) * 1000
    if out.error is None and not done:
        out.error = "stream ended without its terminal event"
    return out


async def send(
    client: httpx.AsyncClient, call: Call, on_first: Callable[[], None] | None = None
) -> Outcome:
    started = time.perf_counter()
    try:
        if call.stream == "none":
            r = await client.post(call.path, json=call.body)
            return _answered(call, r, r.content, started)
        async with client.stream("POST", call.path, json=call.body) as r:
            if r.status_code != 200:
                return _answered(call, r, await r.aread(), started)
            return await _read_stream(call, r, started, on_first)
    except (httpx.HTTPError, ValueError) as exc:
        ms = (time.perf_counter() - started) * 1000
        return Outcome(call.route, 0, ms, error=f"{type(exc).__name__}: {exc}"[:120])


def client_for(url: str, concurrency: int, timeout: float) -> httpx.AsyncClient:
    pool = concurrency + 4
    return httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(timeout, connect=10),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
    )


async def closed_loop(
    client: httpx.AsyncClient, calls: list[Call], concurrency: int, label: str
) -> tuple[list[Outcome], float]:
    """`concurrency` clients, each sending its next call as soon as its last one ended."""
    pending: Iterator[Call] = iter(calls)  # shared: each call is taken once
    outcomes: list[Outcome] = []

    async def client_loop() -> None:
        for call in pending:
            outcomes.append(await send(client, call))

    async def progress() -> None:
        while True:
            await asyncio.sleep(10)
            bad = sum(1 for o in outcomes if not o.ok and not o.rejected)
            rejected = sum(1 for o in outcomes if o.rejected)
            log(f"{label}: {len(outcomes)}/{len(calls)} done, {rejected} 429, {bad} errors")

    reporter = asyncio.create_task(progress())
    started = time.perf_counter()
    try:
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    finally:
        reporter.cancel()
    return outcomes, time.perf_counter() - started


# --- figures -------------------------------------------------------------------------------


def latency(ms: Iterable[float], prefix: str = "") -> dict[str, float]:
    values = np.array(list(ms))
    if not len(values):
        return {}
    p50, p99 = np.percentile(values, [50, 99])
    return {
        f"{prefix}p50_ms": round(float(p50), 2),
        f"{prefix}p99_ms": round(float(p99), 2),
        f"{prefix}max_ms": round(float(values.max()), 2),
    }


def tally(outcomes: list[Outcome]) -> dict[str, Any]:
    """Counts (answered, 429 with Retry-After, errors by kind) and latencies of the answered."""
    ok = [o for o in outcomes if o.ok]
    rejected = [o for o in outcomes if o.rejected and o.error is None]
    errors = Counter(
        o.error or f"status {o.status}"
        for o in outcomes
        if not o.ok and not (o.rejected and o.error is None)
    )
    row: dict[str, Any] = {
        "requests": len(outcomes),
        "ok": len(ok),
        "rejected_429": len(rejected),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(10)),
        **latency(o.ms for o in ok),
    }
    waits = []
    for o in rejected:
        with contextlib.suppress(ValueError):
            waits.append(float(o.retry_after or ""))
    if waits:
        row["retry_after_s"] = {"min": min(waits), "median": statistics.median(waits)}
        row["retry_after_s"]["max"] = max(waits)
    ttfts = [o.ttft_ms for o in ok if o.ttft_ms is not None]
    if ttfts:
        row.update(latency(ttfts, "ttft_"))
    return row


def per_route(outcomes: list[Outcome], wall: float) -> dict[str, Any]:
    routes = sorted({o.route for o in outcomes})
    return {
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(outcomes) / wall, 2) if wall else None,
        "total": tally(outcomes),
        "routes": {r: tally([o for o in outcomes if o.route == r]) for r in routes},
    }


# --- request mixes -------------------------------------------------------------------------


def search_call(query: str, mode: str) -> Call:
    return Call(f"search_{mode}", "/v1/search", {"query": query, "mode": mode, "k": 5})


def generation_call(route: str, question: str, max_tokens: int, k: int) -> Call:
    opts = {"max_tokens": max_tokens, "k": k, "temperature": 0}
    if route in ("ask", "ask_stream"):
        path = "/v1/ask" if route == "ask" else "/v1/ask/stream"
        return Call(
            route, path, {"question": question, **opts}, "ask" if route != "ask" else "none"
        )
    stream = route == "chat_stream"
    body = {"model": "ragserve", "messages": [{"role": "user", "content": question}], **opts}
    return Call(
        route, "/v1/chat/completions", {**body, "stream": stream}, "chat" if stream else "none"
    )


def mixed_calls(args: argparse.Namespace, queries: list[str]) -> list[Call]:
    """A seeded mix: `--gen-share` of the requests split evenly over the four generating
    routes, the rest evenly over the three search modes."""
    rng = random.Random(args.seed)
    routes = [*(f"search_{m}" for m in SEARCH_MODES), *GEN_ROUTES]
    search_w = (1 - args.gen_share) / len(SEARCH_MODES)
    weights = [search_w] * len(SEARCH_MODES) + [args.gen_share / len(GEN_ROUTES)] * 4
    calls = []
    for i, route in enumerate(rng.choices(routes, weights, k=args.mixed_requests)):
        query = queries[i % len(queries)]
        if route.startswith("search_"):
            calls.append(search_call(query, route.removeprefix("search_")))
        else:
            calls.append(generation_call(route, query, args.max_tokens, args.gen_k))
    return calls


def admission_env(max_concurrent: int | None, max_queue: int | None) -> dict[str, str]:
    env = {}
    if max_concurrent is not None:
        env["RAG_LLM__MAX_CONCURRENT"] = str(max_concurrent)
    if max_queue is not None:
        env["RAG_LLM__MAX_QUEUE"] = str(max_queue)
    return env


# --- scenarios -----------------------------------------------------------------------------


async def scenario_mixed(bench: Bench) -> dict[str, Any]:
    args = bench.args
    extra = admission_env(args.mixed_max_concurrent, args.mixed_max_queue)
    server = bench.rag_server("mixed", extra)
    server.wait_ready(args.start_timeout, generator=True)
    calls = mixed_calls(args, bench.corpus.queries)
    async with client_for(server.url, args.mixed_clients, args.request_timeout) as client:
        # One of each route first: lazy allocations (the engine's first batch, the embedder's
        # first call) land before the "before" RSS, not inside the run.
        warm = [search_call(q, m) for q in bench.corpus.queries[:4] for m in SEARCH_MODES]
        warm += [generation_call(r, bench.corpus.queries[0], 4, args.gen_k) for r in GEN_ROUTES]
        warmup = [await send(client, call) for call in warm]
        before = server.memory()
        log(f"mixed: {len(calls)} requests from {args.mixed_clients} clients")
        outcomes, wall = await closed_loop(client, calls, args.mixed_clients, "mixed")
        after = server.memory()
    result = per_route(outcomes, wall)
    growth = {
        k: round(after[k] / before[k] - 1, 4)
        for k in ("server_rss_mb", "total_rss_mb")
        if before.get(k) and k in after
    }
    return {
        "requests": len(calls),
        "clients": args.mixed_clients,
        "gen_share": args.gen_share,
        "max_tokens": args.max_tokens,
        "gen_k": args.gen_k,
        "admission_env": extra,
        "warmup_errors": [o.error for o in warmup if not o.ok],
        **result,
        "rss_before": before,
        "rss_after": after,
        "rss_growth": growth,
        "targets": {"errors_other_than_429": 0, "rss_growth_max": 0.10},
    }


async def scenario_batching(bench: Bench) -> dict[str, Any]:
    args = bench.args
    servers = {
        "batching_on": bench.rag_server(
            "batching-on", {"RAG_EMBEDDING__QUERY_BATCH_MAX": "64"}, generator=False
        ),
        "batching_off": bench.rag_server(
            "batching-off", {"RAG_EMBEDDING__QUERY_BATCH_MAX": "1"}, generator=False
        ),
    }
    for server in servers.values():
        server.wait_ready(args.start_timeout, generator=False)
    queries = bench.corpus.queries
    top = max(args.batching_levels)
    runs: dict[str, dict[int, list[tuple[list[Outcome], float]]]] = {
        v: {n: [] for n in args.batching_levels} for v in servers
    }
    async with AsyncExitStack() as stack:
        clients = {
            v: await stack.enter_async_context(client_for(s.url, top, args.request_timeout))
            for v, s in servers.items()
        }
        for client in clients.values():
            for q in queries[:20]:
                await send(client, search_call(q, args.batching_mode))
        for r in range(args.batching_rounds):
            for i, n in enumerate(args.batching_levels):
                # Alternate which variant goes first: neither always meets a warmer machine.
                order = list(servers) if (r + i) % 2 == 0 else list(servers)[::-1]
                for v in order:
                    calls = [
                        search_call(queries[(r * 7919 + j) % len(queries)], args.batching_mode)
                        for j in range(args.batching_requests)
                    ]
                    label = f"batching {v} round {r} at {n} clients"
                    runs[v][n].append(await closed_loop(clients[v], calls, n, label))
                    log(f"{label}: {args.batching_requests / runs[v][n][-1][1]:.1f} req/s")
    variants: dict[str, Any] = {}
    kept = ("requests", "ok", "errors", "p50_ms", "p99_ms")
    for v, levels in runs.items():
        variants[v] = {}
        for n, rounds in levels.items():
            outcomes = [o for oc, _ in rounds for o in oc]
            wall = sum(w for _, w in rounds)
            t = tally(outcomes)
            variants[v][str(n)] = {
                "requests_per_s": round(len(outcomes) / wall, 2),
                "requests_per_s_rounds": [round(len(oc) / w, 2) for oc, w in rounds],
                **{k: t[k] for k in kept if k in t},
            }
    on, off = variants["batching_on"], variants["batching_off"]
    low = str(min(args.batching_levels))
    comparison = {
        "rps_ratio_on_vs_off": {
            n: round(on[n]["requests_per_s"] / off[n]["requests_per_s"], 3) for n in on
        },
        f"p50_delta_ms_at_{low}_client": round(on[low]["p50_ms"] - off[low]["p50_ms"], 2)
        if "p50_ms" in on[low] and "p50_ms" in off[low]
        else None,
    }
    return {
        "mode": args.batching_mode,
        "requests_per_level_and_round": args.batching_requests,
        "rounds": args.batching_rounds,
        "variants": variants,
        "comparison": comparison,
        "targets": {"rps_ratio_at_64_min": 1.5, "p50_delta_ms_at_1_max": 1.0},
    }


@dataclass
class StreamGauge:
    """How many of the background streams are producing tokens now (client side)."""

    target: int  # streams producing at once that count as saturated
    open: int = 0
    started: int = 0
    samples: list[int] = field(default_factory=list)
    saturated: asyncio.Event = field(default_factory=asyncio.Event)

    def first_token(self) -> None:
        self.open += 1
        self.started += 1
        if self.started >= self.target:
            self.saturated.set()


async def scenario_saturated(bench: Bench) -> dict[str, Any]:
    args = bench.args
    cap, queue = args.sat_max_concurrent, args.sat_max_queue
    workers = args.sat_streams or cap + queue + 4
    server = bench.rag_server("saturated", admission_env(cap, queue))
    server.wait_ready(args.start_timeout, generator=True)
    queries = bench.corpus.queries
    mode = args.sat_search_mode

    def searches() -> list[Call]:
        return [
            search_call(queries[j % len(queries)], mode) for j in range(args.sat_search_requests)
        ]

    c = args.sat_search_clients
    async with (
        client_for(server.url, c, args.request_timeout) as search_client,
        client_for(server.url, workers, args.request_timeout) as stream_client,
    ):
        for q in queries[:20]:
            await send(search_client, search_call(q, mode))
        await send(stream_client, generation_call("ask_stream", queries[0], 4, args.gen_k))
        idle, idle_wall = await closed_loop(search_client, searches(), c, "saturated idle")
        log(f"saturated: idle search done; starting {workers} streams (cap {cap}, queue {queue})")

        gauge = StreamGauge(target=min(cap, workers))
        streams: list[Outcome] = []

        async def stream_loop(i: int) -> None:
            while True:
                q = queries[i % len(queries)]
                call = generation_call("ask_stream", q, args.sat_max_tokens, args.gen_k)
                out = await send(stream_client, call, gauge.first_token)
                if out.ttft_ms is not None:
                    gauge.open -= 1
                streams.append(out)
                if out.rejected:  # honour Retry-After, capped: keep the queue full
                    with contextlib.suppress(ValueError):
                        await asyncio.sleep(min(float(out.retry_after or 1), args.sat_retry_cap_s))
                elif not out.ok:
                    await asyncio.sleep(0.5)
                i += workers

        async def sample() -> None:
            while True:
                gauge.samples.append(gauge.open)
                await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(stream_loop(i)) for i in range(workers)]
        try:
            t0 = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gauge.saturated.wait(), args.start_timeout)
            saturated_after_s = round(time.monotonic() - t0, 1)
            sampler = asyncio.create_task(sample())
            busy, busy_wall = await closed_loop(search_client, searches(), c, "saturated busy")
            sampler.cancel()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    idle_t, busy_t = tally(idle), tally(busy)
    ratio = (
        round(busy_t["p99_ms"] / idle_t["p99_ms"], 3)
        if "p99_ms" in busy_t and "p99_ms" in idle_t
        else None
    )
    return {
        "max_concurrent": cap,
        "max_queue": queue,
        "stream_clients": workers,
        "stream_max_tokens": args.sat_max_tokens,
        "search_mode": mode,
        "search_clients": c,
        "idle": {**idle_t, "requests_per_s": round(len(idle) / idle_wall, 2)},
        "saturated": {
            **busy_t,
            "requests_per_s": round(len(busy) / busy_wall, 2),
            "seconds_to_saturate": saturated_after_s,
            "streams_producing_mean": round(statistics.fmean(gauge.samples), 2)
            if gauge.samples
            else None,
            "streams_producing_min": min(gauge.samples) if gauge.samples else None,
        },
        # Streams cut at the end of the phase are not counted (cancelled, no outcome).
        "background_streams": tally(streams),
        "p99_ratio_saturated_vs_idle": ratio,
        "targets": {"p99_ratio_max": 2.0},
    }


async def chain_prompts(
    bench: Bench, data: Path, questions: list[str], base_url: str, max_tokens: int
) -> list[list[dict[str, str]]]:
    """The exact messages our service sends upstream, built by the same chain code; the peer
    relays these, so both send the vLLM server the same prompts."""
    from pipelines.access import FULL_ACCESS
    from pipelines.chain import AskInput, RagChain
    from pipelines.core import open_core
    from pipelines.generators.openai_server import OpenAIServerGenerator
    from pipelines.settings import EmbeddingSettings, LLMSettings, Settings
    from pipelines.types import ChatMessage

    settings = Settings(
        _env_file=None,
        data_dir=data,
        embedding=EmbeddingSettings(cache_dir=bench.corpus.embeddings),
        llm=LLMSettings(base_url=base_url, model=SERVED_MODEL),
    )
    out = []
    # Closed on the way out: our server process opens this shard afterwards.
    async with open_core(settings) as core:
        generator = OpenAIServerGenerator(settings.llm)
        chain = RagChain(core.retrieval, generator)
        try:
            for q in questions:
                ask = AskInput(
                    messages=[ChatMessage("user", q)],
                    collection="default",
                    k=bench.args.gen_k,
                    max_tokens=max_tokens,
                    access=FULL_ACCESS,
                )
                prompt = await chain.prompt(ask)
                out.append([{"role": m.role, "content": m.content} for m in prompt.messages])
        finally:
            await generator.close()
    return out


def vllm_server(bench: Bench) -> Server:
    """`python -m vllm.entrypoints.openai.api_server` with the same model, as bench/stream.py
    starts it (prefix caching off: the apps send the same prompts one after the other)."""
    from pipelines.generators.vllm_engine import auto_cpu_dtype

    try:
        import torch

        dtype = "auto" if torch.cuda.is_available() else auto_cpu_dtype()
    except ImportError:
        dtype = auto_cpu_dtype()
    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", bench.corpus.model_path,
        "--served-model-name", SERVED_MODEL,
        "--enforce-eager",
        "--dtype", dtype,
        "--no-enable-prefix-caching",
        "--max-model-len", "2048",
        "--host", "127.0.0.1",
    ]  # fmt: skip
    return bench.launch("vllm", argv, bench.env(bench.tmp / "vllm-unused", {}))


async def probe_while(
    url: str, running: asyncio.Future[Any], interval_s: float, request_timeout_s: float
) -> list[float]:
    """GET /healthz on its own connection, one after another, until `running` is done: how
    long the app's event loop leaves a trivial request waiting."""
    ms: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=request_timeout_s) as probe:
        while not running.done():
            started = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await probe.get("/healthz")
            ms.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(interval_s)
    return ms


async def scenario_peer(bench: Bench) -> dict[str, Any]:
    args = bench.args
    vllm = vllm_server(bench)
    ours_data = bench.copy_data("peer-ours")
    wait_http(vllm.url + "/health", vllm.proc, args.start_timeout)
    questions = bench.corpus.queries[:64]
    prompts = await chain_prompts(bench, ours_data, questions, vllm.url, args.peer_max_tokens)
    ours = bench.launch(
        "peer-ours",
        [sys.executable, "-m", "app.cli", "serve"],
        bench.env(ours_data, {"RAG_LLM__BASE_URL": vllm.url, "RAG_LLM__MODEL": SERVED_MODEL}),
    )
    peer = bench.launch(
        "peer-baseline",
        [
            sys.executable, str(REPO / "bench" / "peer_baseline.py"),
            "--base-url", vllm.url, "--model", SERVED_MODEL,
        ],
        bench.env(bench.tmp / "peer-unused", {}),
    )  # fmt: skip
    ours.wait_ready(args.start_timeout, generator=True)
    wait_http(peer.url + "/healthz", peer.proc, args.start_timeout)

    def call(app: str, i: int) -> Call:
        mt = args.peer_max_tokens
        if app == "ours":
            body = {"question": questions[i % len(questions)], "max_tokens": mt, "temperature": 0}
            body["k"] = args.gen_k
            return Call(app, "/v1/ask/stream", body, "ask")
        path = "/ask/stream" if app == "peer_threadpool" else "/ask/stream-inline"
        body = {"messages": prompts[i % len(prompts)], "max_tokens": mt, "temperature": 0}
        return Call(app, path, body, "peer")

    urls = {"ours": ours.url, "peer_threadpool": peer.url, "peer_inline": peer.url}
    apps = [a for a in PEER_APPS if a in args.peer_apps]
    rows: list[dict[str, Any]] = []
    top = max(args.peer_levels)
    async with AsyncExitStack() as stack:
        clients = {
            a: await stack.enter_async_context(client_for(urls[a], top, args.request_timeout))
            for a in apps
        }
        for a in apps:  # warm each path once
            await send(clients[a], call(a, 0))
        for li, n in enumerate(args.peer_levels):
            for a in apps[li % len(apps) :] + apps[: li % len(apps)]:
                started = time.perf_counter()
                streams = asyncio.ensure_future(
                    asyncio.gather(*(send(clients[a], call(a, i)) for i in range(n)))
                )
                probe = await probe_while(
                    urls[a], streams, args.probe_interval_ms / 1000, args.request_timeout
                )
                outcomes: list[Outcome] = await streams
                wall = time.perf_counter() - started
                t = tally(outcomes)
                gaps = [o.max_gap_ms for o in outcomes if o.ok]
                probe_t = latency(probe, "probe_")
                stalled = t["errors"] > 0 or probe_t.get("probe_p99_ms", 0) > args.stall_ms
                row = {
                    "app": a,
                    "streams": n,
                    "ok": t["ok"],
                    "errors": t["errors"],
                    "error_kinds": t["error_kinds"],
                    **{k: v for k, v in t.items() if k.startswith(("ttft_", "p50", "p99"))},
                    "tokens_per_s": round(sum(o.tokens for o in outcomes) / wall, 2),
                    "max_token_gap_p50_ms": round(statistics.median(gaps), 1) if gaps else None,
                    "max_token_gap_max_ms": round(max(gaps), 1) if gaps else None,
                    "probes": len(probe),
                    **probe_t,
                    "stalled": stalled,
                    "wall_s": round(wall, 2),
                }
                rows.append(row)
                log(
                    f"peer {a} at {n} streams: ttft p50 {row.get('ttft_p50_ms')} ms, probe p99 "
                    f"{row.get('probe_p99_ms')} ms, {t['errors']} errors"
                )
    sustained: dict[str, int] = {}
    for a in apps:
        best = 0
        for n in sorted(args.peer_levels):
            row = next(r for r in rows if r["app"] == a and r["streams"] == n)
            if row["stalled"]:
                break
            best = n
        sustained[a] = best
    return {
        "levels": args.peer_levels,
        "max_tokens": args.peer_max_tokens,
        "stall_ms": args.stall_ms,
        "probe_interval_ms": args.probe_interval_ms,
        "rows": rows,
        "sustained_streams": sustained,
        "rss": {"ours": ours.memory(), "peer": peer.memory(), "vllm": vllm.memory()},
    }


# --- the run -------------------------------------------------------------------------------


def prepare(args: argparse.Namespace) -> Corpus:
    """Ingest the corpus once under --data-dir (reused by later runs) and, when a scenario
    generates, convert the bundled LLM once."""
    base: Path = args.data_dir
    embeddings = base / "embeddings"
    if args.corpus == "samples":
        label, source, queries = "samples", REPO / "samples", SAMPLE_QUESTIONS
    else:
        scifact: Path = args.scifact
        label = f"scifact-{args.docs}" if args.docs else "scifact"
        source = scifact / "corpus.jsonl"
        if args.docs:
            source = base / f"{label}.jsonl"
            if not source.exists():
                base.mkdir(parents=True, exist_ok=True)
                with (scifact / "corpus.jsonl").open() as src:
                    source.write_text("".join(itertools.islice(src, args.docs)))
        with (scifact / "queries.jsonl").open() as fh:
            queries = [json.loads(line)["text"] for line in fh][:300]
    data = base / label
    if not (data / ".ingested").exists():
        log(f"ingesting {source} into {data} (once)")
        shutil.rmtree(data, ignore_errors=True)
        env = {
            **os.environ,
            "RAG_DATA_DIR": str(data),
            "RAG_EMBEDDING__CACHE_DIR": str(embeddings),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        subprocess.run(
            [sys.executable, "-m", "app.cli", "ingest", str(source)],
            env=env,
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (data / ".ingested").touch()
    corpus = Corpus(data, embeddings, queries, label)
    if set(args.scenarios) & {"mixed", "saturated", "peer"}:
        from pipelines.generators.weights import resolve_model
        from pipelines.settings import BUNDLED_MODEL

        corpus.model_path = args.model or resolve_model(BUNDLED_MODEL, base / "models")
    return corpus


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    ap.add_argument("--corpus", choices=("scifact", "samples"), default="scifact")
    ap.add_argument("--scifact", type=Path, default=REPO.parent / "shared/data/scifact")
    ap.add_argument("--docs", type=int, default=0, help="first N SciFact abstracts (0: all)")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "ragbench-load",
        help="ingested corpora and converted weights, reused between runs",
    )
    ap.add_argument("--model", default=None, help="HF model dir for vLLM (default: bundled)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--request-timeout", type=float, default=600.0)
    ap.add_argument("--start-timeout", type=float, default=600.0)
    g = ap.add_argument_group("mixed")
    g.add_argument("--mixed-requests", type=int, default=2000)
    g.add_argument("--mixed-clients", type=int, default=64)
    g.add_argument("--gen-share", type=float, default=0.15, help="share of generating requests")
    g.add_argument("--max-tokens", type=int, default=16, help="per generating request")
    g.add_argument("--gen-k", type=int, default=3, help="sources per answer (prompt length)")
    g.add_argument("--mixed-max-concurrent", type=int, default=None, help="default: product's")
    g.add_argument("--mixed-max-queue", type=int, default=None, help="default: product's")
    g = ap.add_argument_group("batching")
    g.add_argument("--batching-levels", type=int, nargs="+", default=[1, 16, 64])
    g.add_argument("--batching-requests", type=int, default=500, help="per level and round")
    g.add_argument("--batching-rounds", type=int, default=2)
    g.add_argument("--batching-mode", choices=SEARCH_MODES, default="hybrid")
    g = ap.add_argument_group("saturated")
    g.add_argument("--sat-max-concurrent", type=int, default=4)
    g.add_argument("--sat-max-queue", type=int, default=4)
    g.add_argument("--sat-streams", type=int, default=0, help="0: cap + queue + 4")
    g.add_argument("--sat-max-tokens", type=int, default=64)
    g.add_argument("--sat-search-requests", type=int, default=1000)
    g.add_argument("--sat-search-clients", type=int, default=4)
    g.add_argument("--sat-search-mode", choices=SEARCH_MODES, default="hybrid")
    g.add_argument("--sat-retry-cap-s", type=float, default=1.0)
    g = ap.add_argument_group("peer")
    g.add_argument("--peer-levels", type=int, nargs="+", default=[1, 8, 32, 64])
    g.add_argument("--peer-max-tokens", type=int, default=32)
    g.add_argument("--peer-apps", nargs="+", choices=PEER_APPS, default=list(PEER_APPS))
    g.add_argument("--probe-interval-ms", type=float, default=100.0)
    g.add_argument("--stall-ms", type=float, default=1000.0)
    ap.add_argument("--out", type=Path, default=None)
    # The search-only server under test (started by this script as a subprocess).
    ap.add_argument("--serve-without-generator", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.serve_without_generator:
        serve_without_generator(args.port)
        return
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "load",
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "cpu": cpu_info(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "settings": {
            k: v
            for k, v in vars(args).items()
            if k not in ("out", "serve_without_generator", "port")
        },
        "scenarios": {},
    }
    report["settings"] = json.loads(json.dumps(report["settings"], default=str))
    runners = {
        "mixed": scenario_mixed,
        "batching": scenario_batching,
        "saturated": scenario_saturated,
        "peer": scenario_peer,
    }
    corpus = prepare(args)
    report["corpus"] = corpus.label
    report["model"] = corpus.model_path or None
    for name in SCENARIOS:
        if name not in args.scenarios:
            continue
        log(f"scenario {name}")
        t0 = time.perf_counter()
        # Each scenario's servers are stopped before the next starts: they share two cores.
        with ExitStack() as stack:
            bench = Bench(args, corpus, stack)
            report["scenarios"][name] = asyncio.run(runners[name](bench))
        report["scenarios"][name]["scenario_wall_s"] = round(time.perf_counter() - t0, 1)
        if args.out:  # a long run keeps what it has measured so far
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    report["wall_s"] = round(time.perf_counter() - started, 1)
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
