"""The whole service with a real vLLM: in-process engine and OpenAI server, over real HTTP."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from app.main import create_app
from app.services import Services, build_services
from pipelines.generators.vllm_engine import VllmEngineGenerator
from pipelines.settings import Settings
from tests.support.servers import live_server
from tests.support.sse import aiter_events, parse_events

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


async def test_stream_answer_from_real_engine_with_sources(
    settings: Settings, services: Services, vllm_engine: VllmEngineGenerator
) -> None:
    services.set_generator(vllm_engine)
    async with (
        live_server(create_app(settings, services=services)) as url,
        httpx.AsyncClient(base_url=url, timeout=120) as c,
    ):
        r = await c.post(
            "/v1/ask/stream",
            json={
                "question": "How hot is the surface of Venus?",
                "max_tokens": 40,
                "temperature": 0,
            },
        )
    assert r.status_code == 200
    events = parse_events(r.text)
    names = [e.event for e in events]
    assert names[0] == "sources" and names[-1] == "done"
    assert names.count("done") == 1 and "error" not in names
    assert names.count("token") >= 1
    assert "464 degrees" in events[0].data["sources"][0]["text"]
    done = events[-1].data
    assert done["finish_reason"] in ("stop", "length")
    assert done["usage"]["completion_tokens"] > 0 and done["usage"]["prompt_tokens"] > 50


async def test_client_disconnect_aborts_the_engine_request(
    settings: Settings, services: Services, vllm_engine: VllmEngineGenerator
) -> None:
    """Nobody resumes the stream within its (short) resume window: the engine request ends."""
    services.settings.server.stream_resume_s = 0.3
    services.set_generator(vllm_engine)
    async with live_server(create_app(settings, services=services)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            body = {"question": "Describe the Solar System in detail.", "max_tokens": 1000}
            async with c.stream("POST", "/v1/ask/stream", json=body) as r:
                async for event in aiter_events(r.aiter_lines()):
                    if event.event == "token":
                        break
                assert vllm_engine.active_requests() == 1
            # Leaving the block closes the connection mid-stream.
        for _ in range(200):
            if vllm_engine.active_requests() == 0:
                break
            await asyncio.sleep(0.05)
        assert vllm_engine.active_requests() == 0


async def test_service_wired_to_a_vllm_server_answers(
    make_settings: Any, services: Services, vllm_server: str, served_model: str
) -> None:
    settings: Settings = make_settings(llm={"base_url": vllm_server, "model": served_model})
    await services.store.close()  # the service opens the same data dir itself
    async with AsyncExitStack() as stack:
        wired = await build_services(settings, stack)
        for _ in range(100):
            if wired.generator_state == "ready":
                break
            await asyncio.sleep(0.1)
        assert wired.generator_state == "ready", wired.generator_error
        async with (
            live_server(create_app(settings, services=wired)) as url,
            httpx.AsyncClient(base_url=url, timeout=120) as c,
        ):
            ready = (await c.get("/readyz")).json()
            body = {"question": "What are Saturn's rings made of?", "max_tokens": 32}
            r = await c.post("/v1/ask", json=body)
    assert ready["details"]["generator"] == "ready"
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["answer"].strip()
    assert "water ice" in answer["sources"][0]["text"]
