"""The long-lived parts of the service, built once in the lifespan and handed to routes."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from typing import Literal

import anyio

from app.principal import KeyGate
from app.quotas import Quotas
from ingest.job import build_pipeline
from ingest.originals import Originals
from ingest.pipeline import IngestPipeline
from pipelines.access import FULL_ACCESS
from pipelines.admission import Admission, AdmittedGenerator
from pipelines.chain import RagChain
from pipelines.core import Core, build_core
from pipelines.embedder.sentence_transformer import nvidia_present
from pipelines.embedder.sessions import cpu_threads
from pipelines.errors import GeneratorUnavailable
from pipelines.keys import KeyStore
from pipelines.ports import Embedder, Generator, VectorStore
from pipelines.retrieval import RetrievalService, StoreRetriever
from pipelines.settings import Settings
from pipelines.telemetry import NO_TELEMETRY, Telemetry

log = logging.getLogger(__name__)
GeneratorState = Literal["disabled", "starting", "ready", "failed"]
# What readiness reports: the start state, or once started, how its health probe went.
GeneratorHealth = Literal["disabled", "starting", "ready", "failed", "unreachable"]
# A health probe answers within this, or the generator counts as unreachable.
PROBE_TIMEOUT_S = 2.0
# Generations run at once when RAG_LLM__MAX_CONCURRENT is unset and the generator cannot say
# what it batches well (a server upstream): past what the server batches, requests would
# queue there, where no client can be told to come back; here they can.
UPSTREAM_MAX_CONCURRENT = 64


@dataclass(slots=True)
class Services:
    """The core (embedder, store, retrieval) plus what only the service has: the generator
    as it starts, the chain over it, and the ingest job for uploads."""

    core: Core
    # API keys (None: only RAG_SERVER__API_KEY, if set) and the per-key limits.
    keys: KeyStore | None = None
    quotas: Quotas | None = None
    gate: KeyGate = field(default_factory=KeyGate)
    # Who measures the work (the app's Prometheus metrics; none until the app attaches them).
    telemetry: Telemetry = NO_TELEMETRY
    # The generator as built (its own probes and counters); the chain reaches it through
    # `admission`, the gate every generation passes.
    generator: Generator | None = None
    admission: Admission | None = None
    generator_state: GeneratorState = "disabled"
    generator_error: str | None = None
    chain: RagChain | None = None
    # Uploads and deletes run one at a time: two uploads of one file name must not interleave.
    ingest_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _pipeline: IngestPipeline | None = None

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def embedder(self) -> Embedder:
        return self.core.embedder

    @property
    def store(self) -> VectorStore:
        return self.core.store

    @property
    def retrieval(self) -> RetrievalService:
        return self.core.retrieval

    @property
    def originals(self) -> Originals:
        """The ingested files kept as they were (served by GET .../documents/{id}/file)."""
        return Originals.of(self.settings)

    @property
    def pipeline(self) -> IngestPipeline:
        """The ingest job for uploads, over the service's own store and embedder."""
        if self._pipeline is None:
            self._pipeline = build_pipeline(self.core, serving=True)
        return self._pipeline

    def set_generator(self, generator: Generator) -> None:
        """Serve answers with `generator`, behind an admission gate sized by the settings."""
        llm = self.settings.llm
        self.admission = Admission(
            max_concurrent_for(generator, llm.max_concurrent),
            llm.max_queue,
            llm.queue_timeout_s,
            telemetry=self.telemetry,  # a generator started after the app is measured too
        )
        admitted = AdmittedGenerator(generator, self.admission, timeout_s=llm.timeout_s)
        self.generator = generator
        self.chain = RagChain(
            self.retrieval, admitted, admission=self.admission, citations=self.settings.citations
        )
        self.generator_state = "ready"

    async def generator_health(self) -> tuple[GeneratorHealth, str | None]:
        """The generator's state and, when it cannot answer, why: before it is up its start
        state; once up, the result of a health probe (`Generator.ready()`) bounded in time."""
        if self.generator is None or self.generator_state != "ready":
            return self.generator_state, self.generator_error
        try:
            ok = await asyncio.wait_for(self.generator.ready(), PROBE_TIMEOUT_S)
        except TimeoutError:
            return "unreachable", f"its health probe did not answer within {PROBE_TIMEOUT_S:g} s"
        except Exception as exc:  # a probe that breaks says the same as one that fails
            # /readyz is open: the details (addresses, paths) go to the log, not the reply.
            log.warning("generator health probe failed: %s: %s", type(exc).__name__, exc)
            return "unreachable", f"its health probe failed ({type(exc).__name__})"
        if not ok:
            return "unreachable", (
                "its health probe failed: the model is not serving (down, unreachable or "
                "refusing the request); answers fail with 503 until it is back"
            )
        return "ready", None

    def require_chain(self) -> RagChain:
        if self.chain is None:
            detail = {
                "starting": "the language model is still starting; retry in a few seconds",
                "failed": f"the language model failed to start: {self.generator_error}",
                "disabled": "no language model is configured for this service",
            }[self.generator_state if self.generator_state != "ready" else "disabled"]
            raise GeneratorUnavailable(detail)
        return self.chain


def max_concurrent_for(generator: Generator, configured: int | None) -> int:
    """RAG_LLM__MAX_CONCURRENT, or what the generator batches at once (the in-process engine's
    max_num_seqs), or `UPSTREAM_MAX_CONCURRENT`."""
    if configured is not None:
        return configured
    batch = getattr(generator, "max_num_seqs", None)
    return batch if isinstance(batch, int) and batch >= 1 else UPSTREAM_MAX_CONCURRENT


async def open_keys(settings: Settings, stack: AsyncExitStack) -> tuple[KeyStore, Quotas]:
    """The key database (migrated to the current schema) and the per-key limits."""
    keys = await anyio.to_thread.run_sync(KeyStore.open, settings.database_url)
    stack.callback(keys.close)
    quotas = Quotas.from_settings(settings)
    stack.push_async_callback(quotas.close)
    return keys, quotas


async def _start_generator(services: Services, stack: AsyncExitStack) -> None:
    from pipelines.generators import build_generator

    started = time.perf_counter()
    try:
        generator = await build_generator(services.settings)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        services.generator_state = "failed"
        services.generator_error = f"{type(exc).__name__}: {exc}"
        log.exception("the generator failed to start")
        return
    stack.push_async_callback(generator.close)
    services.set_generator(generator)
    log.info(
        "generator ready (%s) in %.1fs",
        ", ".join(generator.model_names),
        time.perf_counter() - started,
    )


async def _warm_up(retrieval: RetrievalService, collection: str) -> None:
    """One search before serving, so the first user does not pay for the embedder's first
    inference, the index's first reads and LangChain's first call."""
    started = time.perf_counter()
    what = f"search on '{collection}'"
    try:
        if collection in await retrieval.store.list_collections():
            # Through the LangChain retriever, as /v1/search does (its first call costs ~30 ms).
            retriever = StoreRetriever(service=retrieval, collection=collection, access=FULL_ACCESS)
            await retriever.ainvoke("warm-up query", k=1)
        else:
            what = "query embedding (no default collection yet)"
            await anyio.to_thread.run_sync(retrieval.embedder.embed_queries, ["warm-up query"])
    except Exception as exc:  # a cold first query is no reason to refuse to start
        log.warning("warm-up %s failed (%s: %s); serving anyway", what, type(exc).__name__, exc)
        return
    log.info("warm-up %s in %.0f ms", what, (time.perf_counter() - started) * 1000)


def beside_local_engine(settings: Settings) -> Settings:
    """The settings with the embedder's threads sized to share a CPU with the in-process
    engine. vLLM binds its compute to every core but those it reserves for the serving
    process (VLLM_CPU_NUM_OF_RESERVED_CPU, 1 by default); an embedder that spreads a query
    over the engine's cores too waits for the busiest one. On 2 cores, search p99 while
    generation is saturated: 406 ms with 2 threads, 93 ms with 1 (docs/benchmarks.md).
    Unchanged when RAG_EMBEDDING__THREADS is set, on a GPU, or with a server upstream."""
    if settings.embedding.threads is not None or settings.llm.base_url is not None:
        return settings
    if nvidia_present():
        return settings
    reserved = os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "").strip()
    threads = max(1, min(int(reserved) if reserved.isdigit() else 1, cpu_threads()))
    embedding = settings.embedding.model_copy(update={"threads": threads})
    return settings.model_copy(update={"embedding": embedding})


async def build_services(
    settings: Settings, stack: AsyncExitStack, *, start_generator: bool = True
) -> Services:
    core = build_core(beside_local_engine(settings) if start_generator else settings)
    stack.push_async_callback(core.close)
    # Refuse to start on a collection built with another embedder (checked now, not later).
    for name in await core.store.list_collections():
        await core.store.ensure_collection(name, create=False)
    await _warm_up(core.retrieval, settings.default_collection)
    keys, quotas = await open_keys(settings, stack)
    services = Services(core=core, keys=keys, quotas=quotas)
    if start_generator:
        # Search serves at once; answers follow when the (possibly slow) generator is up.
        services.generator_state = "starting"
        task = asyncio.create_task(_start_generator(services, stack), name="generator-start")

        async def stop_task() -> None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

        stack.push_async_callback(stop_task)
    return services
