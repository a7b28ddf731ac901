"""The Prometheus telemetry: each report moves exactly its metrics; the admission gate reports
every generation once with how it ended; the micro-batcher its call sizes; the live gauges
read the gate at scrape time, and GPU metrics are absent (not zero) without a GPU."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from app.metrics import LiveGauges, PrometheusTelemetry
from pipelines.admission import Admission, AdmittedGenerator
from pipelines.errors import GenerationFailed, UpstreamTimeout
from pipelines.gpu import GpuProbe
from pipelines.microbatch import MicroBatcher
from pipelines.types import ChatMessage, GenerationChunk, GenerationRequest
from tests.support.fakes import ScriptedGenerator
from tests.support.metrics import has_nvml

REQUEST = GenerationRequest(
    messages=[ChatMessage("user", "How hot is Venus?")], max_tokens=8, temperature=0.0
)
MODEL = {"model": "scripted"}


def value(t: PrometheusTelemetry, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value; 0 for a series not created yet (so deltas read naturally)."""
    got = t.registry.get_sample_value(name, labels or {})
    return 0.0 if got is None else got


def names(registry: CollectorRegistry) -> set[str]:
    return {metric.name for metric in registry.collect()}


def admitted(gen: object, t: PrometheusTelemetry, *, timeout_s: float = 30.0) -> AdmittedGenerator:
    admission = Admission(2, 2, 5.0, telemetry=t)
    return AdmittedGenerator(gen, admission, timeout_s=timeout_s)  # type: ignore[arg-type]


# -- each port method --------------------------------------------------------------------------


def test_generation_reports_move_their_histograms_and_counters() -> None:
    t = PrometheusTelemetry()
    t.generation_queued("m", 0.25)
    t.generation_first_token("m", 0.5)
    t.generation_token_gap("m", 0.02)
    t.generation_token_gap("m", 0.04)
    t.generation_ended("m", "stop", prompt_tokens=100, completion_tokens=20, seconds=2.0)
    m = {"model": "m"}
    assert value(t, "ragserve_generation_queue_wait_seconds_count", m) == 1
    assert value(t, "ragserve_generation_queue_wait_seconds_sum", m) == 0.25
    assert value(t, "ragserve_generation_ttft_seconds_count", m) == 1
    assert value(t, "ragserve_generation_ttft_seconds_bucket", {**m, "le": "0.5"}) == 1
    assert value(t, "ragserve_generation_ttft_seconds_bucket", {**m, "le": "0.25"}) == 0
    assert value(t, "ragserve_generation_inter_token_seconds_count", m) == 2
    assert value(t, "ragserve_generation_inter_token_seconds_sum", m) == pytest.approx(0.06)
    assert value(t, "ragserve_prompt_tokens_total", m) == 100
    assert value(t, "ragserve_completion_tokens_total", m) == 20
    assert value(t, "ragserve_generation_tokens_per_second_sum", m) == 10.0  # 20 tokens / 2 s
    assert value(t, "ragserve_generations_total", {**m, "outcome": "stop"}) == 1
    assert value(t, "ragserve_generations_aborted_total", {**m, "reason": "client_gone"}) == 0


def test_aborted_and_failed_generations_are_counted_by_reason() -> None:
    t = PrometheusTelemetry()
    t.generation_ended(
        "m", "aborted", prompt_tokens=0, completion_tokens=0, seconds=1.0, reason="client_gone"
    )
    t.generation_ended(
        "m", "failed", prompt_tokens=0, completion_tokens=0, seconds=0.1, reason="x_failed"
    )
    t.generation_ended(
        "m", "timeout", prompt_tokens=0, completion_tokens=0, seconds=9, reason="upstream_timeout"
    )
    m = {"model": "m"}
    assert value(t, "ragserve_generations_total", {**m, "outcome": "aborted"}) == 1
    assert value(t, "ragserve_generations_total", {**m, "outcome": "failed"}) == 1
    assert value(t, "ragserve_generations_total", {**m, "outcome": "timeout"}) == 1
    assert value(t, "ragserve_generations_aborted_total", {**m, "reason": "client_gone"}) == 1
    assert value(t, "ragserve_generations_failed_total", {**m, "reason": "x_failed"}) == 1
    assert value(t, "ragserve_generations_failed_total", {**m, "reason": "upstream_timeout"}) == 1
    # No completion tokens, no tokens/s sample (a rate of 0 would drag the histogram down).
    assert value(t, "ragserve_generation_tokens_per_second_count", m) == 0


def test_retrieval_reports_phases_hits_and_empty_searches() -> None:
    t = PrometheusTelemetry()
    t.retrieval_phase("hybrid", "embed", 0.004)
    t.retrieval_phase("hybrid", "total", 0.010)
    t.retrieval_hits("docs", "hybrid", 5)
    t.retrieval_hits("docs", "sparse", 0)
    t.batch("query", 3)
    phase = {"mode": "hybrid", "phase": "embed"}
    assert value(t, "ragserve_retrieval_seconds_count", phase) == 1
    assert value(t, "ragserve_retrieval_seconds_sum", phase) == 0.004
    assert value(t, "ragserve_retrieval_seconds_count", {**phase, "phase": "total"}) == 1
    assert value(t, "ragserve_retrieval_seconds_count", {**phase, "phase": "search"}) == 0
    assert value(t, "ragserve_retrieval_hits_sum", {"mode": "hybrid"}) == 5
    assert value(t, "ragserve_retrieval_hits_bucket", {"mode": "sparse", "le": "0.0"}) == 1
    assert value(t, "ragserve_retrieval_empty_total", {"collection": "docs", "mode": "sparse"}) == 1
    assert value(t, "ragserve_retrieval_empty_total", {"collection": "docs", "mode": "hybrid"}) == 0
    assert value(t, "ragserve_embed_batch_size_sum", {"kind": "query"}) == 3


def test_ingest_and_cost_reports_add_up() -> None:
    t = PrometheusTelemetry()
    t.ingest_documents("docs", "added", 3)
    t.ingest_documents("docs", "failed", 1)
    t.ingest_embedded("docs", chunks=12, tokens=3000, seconds=1.5)
    t.ingest_embedded("docs", chunks=4, tokens=1000, seconds=0.5)
    t.cost("m", 0.002, 0.01)
    t.cost("m", 0.001, None)
    c = {"collection": "docs"}
    assert value(t, "ragserve_ingest_documents_total", {**c, "outcome": "added"}) == 3
    assert value(t, "ragserve_ingest_documents_total", {**c, "outcome": "failed"}) == 1
    assert value(t, "ragserve_ingest_chunks_total", c) == 16
    assert value(t, "ragserve_ingest_embedding_tokens_total", c) == 4000
    assert value(t, "ragserve_ingest_embedding_seconds_total", c) == 2.0
    assert value(t, "ragserve_cost_total", {"model": "m"}) == pytest.approx(0.003)
    assert value(t, "ragserve_cost_reference_total", {"model": "m"}) == pytest.approx(0.01)


def test_a_given_registry_is_the_one_written_to() -> None:
    registry = CollectorRegistry()
    t = PrometheusTelemetry(registry)
    t.ingest_documents("docs", "added", 2)
    assert t.registry is registry
    assert (
        registry.get_sample_value(
            "ragserve_ingest_documents_total", {"collection": "docs", "outcome": "added"}
        )
        == 2
    )


# -- the admission gate reports each generation ------------------------------------------------


async def drain(gen: AdmittedGenerator) -> list[GenerationChunk]:
    return [chunk async for chunk in gen.stream(REQUEST)]


async def test_a_finished_generation_reports_ttft_gaps_and_its_usage() -> None:
    t = PrometheusTelemetry()
    chunks = await drain(admitted(ScriptedGenerator(), t))
    assert chunks[-1].completion_tokens == 5
    assert value(t, "ragserve_generation_queue_wait_seconds_count", MODEL) == 1
    assert value(t, "ragserve_generation_ttft_seconds_count", MODEL) == 1
    assert value(t, "ragserve_generation_inter_token_seconds_count", MODEL) == 4  # 5 texts
    assert value(t, "ragserve_prompt_tokens_total", MODEL) == 42
    assert value(t, "ragserve_completion_tokens_total", MODEL) == 5
    assert value(t, "ragserve_generation_tokens_per_second_count", MODEL) == 1
    assert value(t, "ragserve_generations_total", {**MODEL, "outcome": "stop"}) == 1
    assert value(t, "ragserve_generations_total", {**MODEL, "outcome": "aborted"}) == 0


async def test_a_stream_closed_by_its_consumer_is_one_aborted_generation() -> None:
    t = PrometheusTelemetry()
    gen = admitted(ScriptedGenerator(forever=True), t)
    stream = gen.stream(REQUEST)
    for _ in range(3):
        await anext(stream)
    await stream.aclose()
    assert value(t, "ragserve_generations_total", {**MODEL, "outcome": "aborted"}) == 1
    assert value(t, "ragserve_generations_aborted_total", {**MODEL, "reason": "client_gone"}) == 1
    assert value(t, "ragserve_generation_ttft_seconds_count", MODEL) == 1
    assert value(t, "ragserve_generation_inter_token_seconds_count", MODEL) == 2
    assert gen.admission.running == 0


async def test_a_consumer_closing_after_the_finish_chunk_aborted_nothing() -> None:
    t = PrometheusTelemetry()
    stream = admitted(ScriptedGenerator(), t).stream(REQUEST)
    async for chunk in stream:
        if chunk.finish_reason is not None:
            break
    await stream.aclose()
    assert value(t, "ragserve_generations_total", {**MODEL, "outcome": "stop"}) == 1
    assert value(t, "ragserve_generations_total", {**MODEL, "outcome": "aborted"}) == 0


async def test_a_failing_generator_is_one_failed_generation_with_its_code() -> None:
    t = PrometheusTelemetry()
    with pytest.raises(GenerationFailed):
        await drain(admitted(ScriptedGenerator(fail_after=2), t))
    assert value(t, "ragserve_generations_total", {**MODEL, "outcome": "failed"}) == 1
    reason = {**MODEL, "reason": "generation_failed"}
    assert value(t, "ragserve_generations_failed_total", reason) == 1
    assert value(t, "ragserve_generation_ttft_seconds_count", MODEL) == 1


async def test_a_generation_past_its_deadline_is_one_timeout() -> None:
    t = PrometheusTelemetry()
    with pytest.raises(UpstreamTimeout):
        await drain(admitted(ScriptedGenerator(forever=True, delay_s=0.01), t, timeout_s=0.05))
    assert value(t, "ragserve_generations_total", {**MODEL, "outcome": "timeout"}) == 1
    reason = {**MODEL, "reason": "upstream_timeout"}
    assert value(t, "ragserve_generations_failed_total", reason) == 1


async def test_a_cancelled_consumer_is_one_aborted_generation() -> None:
    t = PrometheusTelemetry()
    gen = ScriptedGenerator(forever=True, delay_s=0.001)

    async def consume() -> None:
        await drain(admitted(gen, t))

    task = asyncio.ensure_future(consume())
    await asyncio.to_thread(gen.generating.wait, 5.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5.0)
    assert value(t, "ragserve_generations_aborted_total", {**MODEL, "reason": "client_gone"}) == 1
    assert value(t, "ragserve_generations_total", {**MODEL, "outcome": "aborted"}) == 1


async def test_an_unknown_model_name_is_counted_under_the_served_one() -> None:
    t = PrometheusTelemetry()
    request = GenerationRequest(REQUEST.messages, 8, 0.0, model="made-up-by-a-client")
    gen = admitted(ScriptedGenerator(), t)
    assert gen.model_label(request) == "scripted"


# -- micro-batcher, live gauges ----------------------------------------------------------------


async def test_the_micro_batcher_reports_each_call_size() -> None:
    t = PrometheusTelemetry()
    batcher: MicroBatcher[str, str] = MicroBatcher(
        lambda items: [i.upper() for i in items], max_batch=8, kind="query", telemetry=t
    )
    await asyncio.gather(*(batcher.submit(s) for s in ("a", "b", "c")))
    calls = batcher.stats.calls
    assert value(t, "ragserve_embed_batch_size_count", {"kind": "query"}) == calls
    assert value(t, "ragserve_embed_batch_size_sum", {"kind": "query"}) == 3


@dataclass
class FakeServices:
    """What LiveGauges reads of the services: the gate and the raw generator."""

    admission: Admission | None
    generator: object | None = None


async def test_live_gauges_read_the_gate_at_scrape_time() -> None:
    registry = CollectorRegistry()
    admission = Admission(3, 4, 5.0)
    services = FakeServices(admission)
    registry.register(LiveGauges(lambda: services, GpuProbe()))  # type: ignore[arg-type, return-value]
    assert registry.get_sample_value("ragserve_generations_capacity") == 3
    assert registry.get_sample_value("ragserve_generations_running") == 0
    async with admission.place():
        assert registry.get_sample_value("ragserve_generations_running") == 1
        assert registry.get_sample_value("ragserve_generations_queued") == 0
    assert registry.get_sample_value("ragserve_generations_running") == 0


def test_without_a_gate_or_engine_or_gpu_the_live_gauges_are_absent() -> None:
    registry = CollectorRegistry()
    services = FakeServices(None, ScriptedGenerator())  # no engine statistics
    registry.register(LiveGauges(lambda: services, GpuProbe()))  # type: ignore[arg-type, return-value]
    live = ("ragserve_generations_", "ragserve_engine_")
    assert not {n for n in names(registry) if n.startswith(live)}
    if not has_nvml():
        assert not {n for n in names(registry) if n.startswith("ragserve_gpu_")}


@pytest.mark.skipif(has_nvml(), reason="an NVIDIA driver is present: GPUs are measured")
def test_on_a_machine_without_nvml_the_gpu_probe_reads_nothing() -> None:
    assert GpuProbe().read() == []
