"""The metrics with the real in-process vLLM engine: one streamed answer is one TTFT sample and
exactly the token counts its `done` event reported; the engine's own statistics (KV-cache
usage, requests running and waiting) are exposed beside ours, and settle once it is idle."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.main import create_app
from app.services import Services
from pipelines.generators.vllm_engine import VllmEngineGenerator
from pipelines.settings import Settings
from tests.support.metrics import get, parse
from tests.support.servers import live_server
from tests.support.sse import parse_events

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

WAIT_S = 10.0


async def test_a_streamed_answer_is_one_ttft_and_its_usage_in_the_counters(
    settings: Settings, services: Services, vllm_engine: VllmEngineGenerator
) -> None:
    services.set_generator(vllm_engine)
    model = {"model": vllm_engine.model_names[0]}
    async with (
        live_server(create_app(settings, services=services)) as url,
        httpx.AsyncClient(base_url=url, timeout=120) as c,
    ):
        body = {"question": "How hot is the surface of Venus?", "max_tokens": 24, "temperature": 0}
        r = await c.post("/v1/ask/stream", json=body)
        assert r.status_code == 200
        events = parse_events(r.text)
        assert events[-1].event == "done", events[-1]
        usage = events[-1].data["usage"]
        m = parse((await c.get("/metrics")).text)
        # The engine's scheduler reports its state after each step: idle again once done.
        async with asyncio.timeout(WAIT_S):
            idle = m
            while get(idle, "ragserve_engine_requests_running", **model) != 0:
                await asyncio.sleep(0.05)
                idle = parse((await c.get("/metrics")).text)

    tokens = sum(1 for e in events if e.event == "token")
    assert get(m, "ragserve_generation_ttft_seconds_count", **model) == 1
    assert get(m, "ragserve_generation_inter_token_seconds_count", **model) == tokens - 1
    assert get(m, "ragserve_completion_tokens_total", **model) == usage["completion_tokens"]
    assert get(m, "ragserve_prompt_tokens_total", **model) == usage["prompt_tokens"]
    finish = events[-1].data["finish_reason"]
    assert get(m, "ragserve_generations_total", **model, outcome=finish) == 1
    kv_cache = get(m, "ragserve_engine_kv_cache_usage_ratio", **model)
    assert kv_cache is not None and 0.0 <= kv_cache <= 1.0
    assert get(m, "ragserve_engine_requests_waiting", **model) is not None
    assert get(idle, "ragserve_engine_requests_waiting", **model) == 0
