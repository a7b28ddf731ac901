"""Prometheus metrics, served at GET /metrics: HTTP requests per route, and what the core
reports through the Telemetry port (generation, retrieval, ingest, cost), with the live state
read at scrape time (the admission gate, the in-process engine's scheduler, NVML's GPUs).

Names follow Prometheus's conventions: `ragserve_` prefix, the unit in the name (`_seconds`,
`_bytes`, `_ratio`, `_total` for counters), labels of low cardinality only (route, model,
collection, mode, phase, outcome, reason: an error code). `PrometheusTelemetry` is the whole
port in one registry, so the `rag ingest` CLI can make one too and write it out as a textfile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from app.asgi import HttpMiddleware
from app.services import Services
from pipelines.gpu import GpuProbe
from pipelines.telemetry import (
    NO_TELEMETRY,
    BatchKind,
    GenerationOutcome,
    IngestOutcome,
    RetrievalPhase,
    Telemetry,
)

# Buckets chosen for the quantities (seconds unless said): a CPU engine's first token takes
# seconds, a GPU's tens of ms; one decode step 1 ms (GPU, small model) to ~1 s (CPU, long
# batch); a search a millisecond (sparse) to a second (a cold hybrid with rerank).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1, 2)
TOKENS_PER_S_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RETRIEVAL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
HITS_BUCKETS = (0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 100)  # le=0: the empty retrievals
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class PrometheusTelemetry:
    """The Telemetry port as Prometheus metrics in `registry` (a new one by default: several
    apps in one process, the tests', stay apart)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        def histogram(
            name: str, doc: str, labels: list[str], buckets: Iterable[float]
        ) -> Histogram:
            return Histogram(name, doc, labels, registry=r, buckets=tuple(buckets))

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, registry=r)

        m = ["model"]
        self._ttft = histogram(
            "ragserve_generation_ttft_seconds",
            "Time from a generation's place to its first text",
            m,
            TTFT_BUCKETS,
        )
        self._itl = histogram(
            "ragserve_generation_inter_token_seconds",
            "Time between two text chunks of one generation",
            m,
            ITL_BUCKETS,
        )
        self._tps = histogram(
            "ragserve_generation_tokens_per_second",
            "Completion tokens per second of one generation (place to end)",
            m,
            TOKENS_PER_S_BUCKETS,
        )
        self._queue = histogram(
            "ragserve_generation_queue_wait_seconds",
            "Wait for a generation place (0 when one was free)",
            m,
            QUEUE_BUCKETS,
        )
        self._prompt = counter("ragserve_prompt_tokens", "Prompt tokens of ended generations", m)
        self._completion = counter(
            "ragserve_completion_tokens", "Completion tokens of ended generations", m
        )
        self._generations = counter(
            "ragserve_generations",
            "Generations by how they ended (stop, length, aborted, timeout, failed)",
            ["model", "outcome"],
        )
        self._aborted = counter(
            "ragserve_generations_aborted",
            "Generations aborted, by why (client_gone: the client left and did not resume)",
            ["model", "reason"],
        )
        self._failed = counter(
            "ragserve_generations_failed",
            "Generations that failed or timed out, by error code",
            ["model", "reason"],
        )
        self._retrieval = histogram(
            "ragserve_retrieval_seconds",
            "Search time by mode and phase (embed, search, rerank, total)",
            ["mode", "phase"],
            RETRIEVAL_BUCKETS,
        )
        self._hits = histogram(
            "ragserve_retrieval_hits", "Hits one search returned", ["mode"], HITS_BUCKETS
        )
        self._empty = counter(
            "ragserve_retrieval_empty", "Searches that returned nothing", ["collection", "mode"]
        )
        self._batch = histogram(
            "ragserve_embed_batch_size",
            "Requests served by one model call (query embeddings, reranks)",
            ["kind"],
            BATCH_BUCKETS,
        )
        c = ["collection"]
        self._ingest_docs = counter(
            "ragserve_ingest_documents",
            "Documents ingested by outcome (added, updated, unchanged, deleted, failed)",
            ["collection", "outcome"],
        )
        self._ingest_chunks = counter("ragserve_ingest_chunks", "Chunks embedded and stored", c)
        self._ingest_tokens = counter(
            "ragserve_ingest_embedding_tokens", "Tokens of the chunks embedded", c
        )
        self._ingest_seconds = counter(
            "ragserve_ingest_embedding_seconds", "Embedding model time for the chunks embedded", c
        )
        self._cost = counter("ragserve_cost", "Estimated cost of answers, US dollars", m)
        self._cost_reference = counter(
            "ragserve_cost_reference",
            "What the same tokens would cost at the hosted reference price, US dollars",
            m,
        )

    # -- generation --------------------------------------------------------------------------

    def generation_queued(self, model: str, wait_s: float) -> None:
        self._queue.labels(model).observe(wait_s)

    def generation_first_token(self, model: str, seconds: float) -> None:
        self._ttft.labels(model).observe(seconds)

    def generation_token_gap(self, model: str, seconds: float) -> None:
        self._itl.labels(model).observe(seconds)

    def generation_ended(
        self,
        model: str,
        outcome: GenerationOutcome,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        seconds: float,
        reason: str = "",
    ) -> None:
        self._generations.labels(model, outcome).inc()
        self._prompt.labels(model).inc(prompt_tokens)
        self._completion.labels(model).inc(completion_tokens)
        if completion_tokens > 0 and seconds > 0:
            self._tps.labels(model).observe(completion_tokens / seconds)
        if outcome == "aborted":
            self._aborted.labels(model, reason or "unknown").inc()
        elif outcome in ("failed", "timeout"):
            self._failed.labels(model, reason or outcome).inc()

    # -- retrieval ---------------------------------------------------------------------------

    def retrieval_phase(self, mode: str, phase: RetrievalPhase, seconds: float) -> None:
        self._retrieval.labels(mode, phase).observe(seconds)

    def retrieval_hits(self, collection: str, mode: str, hits: int) -> None:
        self._hits.labels(mode).observe(hits)
        if hits == 0:
            self._empty.labels(collection, mode).inc()

    def batch(self, kind: BatchKind, size: int) -> None:
        self._batch.labels(kind).observe(size)

    # -- ingest ------------------------------------------------------------------------------

    def ingest_documents(self, collection: str, outcome: IngestOutcome, count: int) -> None:
        self._ingest_docs.labels(collection, outcome).inc(count)

    def ingest_embedded(self, collection: str, chunks: int, tokens: int, seconds: float) -> None:
        self._ingest_chunks.labels(collection).inc(chunks)
        self._ingest_tokens.labels(collection).inc(tokens)
        self._ingest_seconds.labels(collection).inc(seconds)

    # -- cost --------------------------------------------------------------------------------

    def cost(self, model: str, usd: float, reference_usd: float | None) -> None:
        self._cost.labels(model).inc(usd)
        if reference_usd is not None:
            self._cost_reference.labels(model).inc(reference_usd)


class LiveGauges(Collector):
    """What is true now, read at each scrape rather than tracked: the admission gate's places
    (no samples before a generator is set), the in-process engine's scheduler (none with a
    server upstream) and each GPU (none without NVML: absent, not zero)."""

    def __init__(self, services: Callable[[], Services | None], gpus: GpuProbe) -> None:
        self._services = services
        self._gpus = gpus

    def collect(self) -> Iterable[Metric]:
        services = self._services()
        yield from _admission_gauges(services)
        yield from _engine_gauges(services)
        yield from _gpu_gauges(self._gpus)


def _admission_gauges(services: Services | None) -> Iterable[Metric]:
    admission = services.admission if services is not None else None
    if admission is None:
        return
    for name, doc, value in (
        ("running", "Generations holding a place now", admission.running),
        ("queued", "Generations waiting for a place now", admission.queued),
        ("capacity", "Generation places (RAG_LLM__MAX_CONCURRENT)", admission.capacity),
    ):
        yield GaugeMetricFamily(f"ragserve_generations_{name}", doc, value=value)


def _engine_gauges(services: Services | None) -> Iterable[Metric]:
    generator = services.generator if services is not None else None
    read = getattr(generator, "engine_stats", None)  # the in-process engine only
    if generator is None or not callable(read):
        return
    stats = read()
    if stats is None:
        return
    model = generator.model_names[0] if generator.model_names else "unknown"
    for name, doc, value in (
        ("kv_cache_usage_ratio", "The engine's KV-cache blocks in use", stats.kv_cache_usage),
        ("requests_running", "Requests the engine's scheduler runs", stats.running),
        ("requests_waiting", "Requests waiting in the engine's scheduler", stats.waiting),
    ):
        family = GaugeMetricFamily(f"ragserve_engine_{name}", doc, labels=["model"])
        family.add_metric([model], float(value))
        yield family


def _gpu_gauges(gpus: GpuProbe) -> Iterable[Metric]:
    samples = gpus.read()
    if not samples:
        return
    families = {
        "utilization_ratio": GaugeMetricFamily(
            "ragserve_gpu_utilization_ratio", "Fraction of time a kernel ran (NVML)", labels=["gpu"]
        ),
        "memory_used_bytes": GaugeMetricFamily(
            "ragserve_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=["gpu"]
        ),
        "memory_total_bytes": GaugeMetricFamily(
            "ragserve_gpu_memory_total_bytes", "GPU memory in all (NVML)", labels=["gpu"]
        ),
    }
    for s in samples:
        gpu = [str(s.index)]
        families["utilization_ratio"].add_metric(gpu, s.utilization)
        families["memory_used_bytes"].add_metric(gpu, float(s.memory_used_bytes))
        families["memory_total_bytes"].add_metric(gpu, float(s.memory_total_bytes))
    yield from families.values()


def attach_telemetry(services: Services, telemetry: Telemetry) -> None:
    """Let `telemetry` measure the services' work: the core was built before the app, so its
    parts get their telemetry now (a generator set later takes `services.telemetry`)."""
    services.telemetry = telemetry
    services.retrieval.telemetry = telemetry
    if services.admission is not None:
        services.admission.telemetry = telemetry


def detach_telemetry(services: Services) -> None:
    attach_telemetry(services, NO_TELEMETRY)


def install_metrics(
    app: FastAPI, telemetry: PrometheusTelemetry | None = None
) -> PrometheusTelemetry:
    """Count and time every request, serve `telemetry`'s registry at GET /metrics with the live
    gauges of `app.state.services`. Returns the telemetry for the lifespan to attach."""
    telemetry = telemetry if telemetry is not None else PrometheusTelemetry()
    registry = telemetry.registry
    requests = Counter(
        "ragserve_requests_total", "HTTP requests", ["route", "method", "status"], registry=registry
    )
    latency = Histogram(
        "ragserve_request_seconds",
        "Time to response headers",
        ["route"],
        registry=registry,
        buckets=REQUEST_BUCKETS,
    )
    registry.register(LiveGauges(lambda: getattr(app.state, "services", None), GpuProbe()))

    def route_of(scope: Scope) -> str:
        for route in app.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(getattr(route, "path", "other"))
        return "unmatched"

    class Observe(HttpMiddleware):
        """Counts each request by route and status, times it to its response headers."""

        async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
            started = time.perf_counter()
            status = 500
            route = route_of(scope)

            async def observe(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    latency.labels(route).observe(time.perf_counter() - started)
                await send(message)

            try:
                await self.inner(scope, receive, observe)
            finally:
                requests.labels(route, scope["method"], str(status)).inc()

    app.add_middleware(Observe)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return telemetry
