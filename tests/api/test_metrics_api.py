"""GET /metrics on the real app (real store, model, chain; a scripted generator): the answers
and searches it served show up as generation, token, retrieval and gate metrics that add up to
what the clients were told; an abandoned stream is one aborted generation; no GPU metrics on a
machine without one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from app.main import create_app
from app.services import Services
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.metrics import get, has_nvml, parse
from tests.support.servers import in_process_client, live_server
from tests.support.sse import aiter_events, parse_events

WAIT_S = 10.0
MODES = ("dense", "sparse", "hybrid")


@pytest.fixture
def generator(services: Services) -> ScriptedGenerator:
    # Set before the app starts: its lifespan attaches the metrics to the gate it finds.
    gen = ScriptedGenerator()
    services.set_generator(gen)
    return gen


@pytest.fixture
async def client(
    settings: Settings, services: Services, generator: ScriptedGenerator
) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(create_app(settings, services=services)) as c:
        yield c


async def test_metrics_add_up_to_the_answers_and_searches_served(
    client: httpx.AsyncClient, services: Services
) -> None:
    asked = await client.post("/v1/ask", json={"question": "How hot is Venus?"})
    assert asked.status_code == 200, asked.text
    streamed = await client.post("/v1/ask/stream", json={"question": "How hot is Venus?"})
    assert streamed.status_code == 200
    done = parse_events(streamed.text)[-1]
    assert done.event == "done"
    usages = [asked.json()["usage"], done.data["usage"]]
    for mode in MODES:
        r = await client.post("/v1/search", json={"query": "Venus temperature", "mode": mode})
        assert r.status_code == 200, r.text
    r = await client.post("/v1/search", json={"query": "zzqx", "mode": "sparse"})
    assert r.status_code == 200 and r.json()["hits"] == []  # no known term: an empty search

    m = parse((await client.get("/metrics")).text)
    model = {"model": "scripted"}
    assert get(m, "ragserve_generation_ttft_seconds_count", **model) == 2
    assert get(m, "ragserve_generation_queue_wait_seconds_count", **model) == 2
    assert get(m, "ragserve_generation_tokens_per_second_count", **model) == 2
    assert get(m, "ragserve_completion_tokens_total", **model) == sum(
        u["completion_tokens"] for u in usages
    )
    assert get(m, "ragserve_prompt_tokens_total", **model) == sum(
        u["prompt_tokens"] for u in usages
    )
    assert get(m, "ragserve_generations_total", **model, outcome="stop") == 2
    # Each text chunk after the first is one gap: 4 per answer of 5 tokens.
    assert get(m, "ragserve_generation_inter_token_seconds_count", **model) == 2 * 4

    default = services.settings.retrieval.mode  # what the two answers searched with
    searches = {mode: 1 + (2 if mode == default else 0) for mode in MODES}
    searches["sparse"] += 1  # the empty one
    for mode, count in searches.items():
        for phase in ("embed", "search", "total"):
            got = get(m, "ragserve_retrieval_seconds_count", mode=mode, phase=phase)
            assert got == count, (mode, phase)
        assert get(m, "ragserve_retrieval_seconds_count", mode=mode, phase="rerank") is None
        assert get(m, "ragserve_retrieval_hits_count", mode=mode) == count
    assert get(m, "ragserve_retrieval_empty_total", collection="default", mode="sparse") == 1
    assert get(m, "ragserve_retrieval_hits_bucket", mode="sparse", le="0.0") == 1
    # One query embedding per search, however the batcher grouped them: a sparse one embeds
    # its query too, beside its BM25 search, for its hits' cosines (the relevance floor).
    embedded = searches["dense"] + searches["hybrid"] + searches["sparse"]
    assert get(m, "ragserve_embed_batch_size_sum", kind="query") == embedded

    assert services.admission is not None
    assert get(m, "ragserve_generations_capacity") == services.admission.capacity
    assert get(m, "ragserve_generations_running") == 0
    assert get(m, "ragserve_generations_queued") == 0
    assert get(m, "ragserve_requests_total", route="/v1/search", method="POST", status="200") == 4
    names = {name for name, _ in m}
    assert not {n for n in names if n.startswith("ragserve_engine_")}  # no in-process engine
    if not has_nvml():
        assert not {n for n in names if n.startswith("ragserve_gpu_")}  # absent, not zero


async def test_an_abandoned_stream_is_one_aborted_generation(
    settings: Settings, services: Services
) -> None:
    services.settings.server.stream_resume_s = 0  # nobody may come back: abort at once
    gen = ScriptedGenerator(forever=True, delay_s=0.01)
    services.set_generator(gen)
    async with (
        live_server(create_app(settings, services=services)) as url,
        httpx.AsyncClient(base_url=url, timeout=WAIT_S) as c,
    ):
        body = {"question": "How hot is Venus?"}
        async with c.stream("POST", "/v1/ask/stream", json=body) as r:
            async for event in aiter_events(r.aiter_lines()):
                if event.event == "token":
                    break
        assert await asyncio.to_thread(gen.abandoned.wait, WAIT_S), "generation went on"
        aborted: float | None = None
        async with asyncio.timeout(WAIT_S):
            while aborted != 1:
                m = parse((await c.get("/metrics")).text)
                reason = {"model": "scripted", "reason": "client_gone"}
                aborted = get(m, "ragserve_generations_aborted_total", **reason)
                await asyncio.sleep(0.01)
    assert get(m, "ragserve_generations_total", model="scripted", outcome="aborted") == 1
    assert get(m, "ragserve_generations_total", model="scripted", outcome="stop") is None
    assert get(m, "ragserve_generation_ttft_seconds_count", model="scripted") == 1
    assert get(m, "ragserve_generations_running") == 0


async def test_a_generator_set_after_the_app_started_is_measured(
    settings: Settings, services: Services
) -> None:
    """`rag serve` starts the generator in the background, after the app is up: its
    generations are measured all the same."""
    async with in_process_client(create_app(settings, services=services)) as c:
        services.set_generator(ScriptedGenerator())
        asked = await c.post("/v1/ask", json={"question": "How hot is Venus?"})
        assert asked.status_code == 200, asked.text
        m = parse((await c.get("/metrics")).text)
    assert get(m, "ragserve_generation_ttft_seconds_count", model="scripted") == 1
    completion = asked.json()["usage"]["completion_tokens"]
    assert get(m, "ragserve_completion_tokens_total", model="scripted") == completion
