"""The OpenAI-compatible endpoint, driven by clients we did not write: openai SDK, ChatOpenAI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from app.main import create_app
from app.services import Services
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import live_server

QUESTION = [{"role": "user", "content": "How hot is Venus?"}]


@pytest.fixture
async def base_url(settings: Settings, services: Services) -> AsyncIterator[str]:
    services.set_generator(ScriptedGenerator())
    async with live_server(create_app(settings, services=services)) as url:
        yield url + "/v1"


async def test_models_lists_one_model_per_collection(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
    ids = [m.id async for m in client.models.list()]
    assert "rag:default" in ids and "ragserve" in ids


async def test_async_sdk_non_stream_gets_the_answer_usage_and_sources(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
    resp = await client.chat.completions.create(model="rag:default", messages=QUESTION)  # type: ignore[arg-type]
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content == "Venus is hot [1]."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens == 5
    sources = (resp.model_extra or {})["sources"]
    assert sources[0]["n"] == 1 and "464 degrees" in sources[0]["text"]


async def test_async_sdk_stream_gets_the_answer_then_a_usage_chunk(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
    stream = await client.chat.completions.create(
        model="rag:default",
        messages=QUESTION,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
        extra_body={"k": 2},
    )
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Venus is hot [1]."
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals[-1].choices[0].finish_reason == "stop"
    assert len((finals[-1].model_extra or {})["sources"]) <= 2
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 47


async def test_sync_sdk_stream_and_non_stream_get_the_same_answer(base_url: str) -> None:
    def run() -> tuple[str, str]:
        client = openai.OpenAI(base_url=base_url, api_key="unused")
        plain = client.chat.completions.create(model="ragserve", messages=QUESTION)  # type: ignore[arg-type]
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="ragserve",
                messages=QUESTION,  # type: ignore[arg-type]
                stream=True,
            )
            if c.choices
        )
        return plain.choices[0].message.content or "", streamed

    plain, streamed = await asyncio.to_thread(run)
    assert plain == streamed == "Venus is hot [1]."


async def test_unknown_model_is_404_in_openai_shape(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="rag:nope", messages=QUESTION)  # type: ignore[arg-type]
    err = info.value.body
    assert isinstance(err, dict)
    assert "rag:nope" in err["message"] and err["type"] == "invalid_request_error"


async def test_langchain_chat_openai_invoke_and_stream_get_the_answer(base_url: str) -> None:
    llm = ChatOpenAI(base_url=base_url, api_key="unused", model="rag:default")  # type: ignore[arg-type]
    msg = await llm.ainvoke("How hot is Venus?")
    assert msg.content == "Venus is hot [1]."
    parts = [str(c.content) async for c in llm.astream("How hot is Venus?")]
    assert "".join(parts) == "Venus is hot [1]."


async def test_extra_body_filters_hold_for_a_conversation_with_history(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as c:
        r = await c.post(
            "/chat/completions",
            json={
                "model": "rag:default",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "Tell me about coffee"},
                    {"role": "assistant", "content": "Sure [1]."},
                    {"role": "user", "content": [{"type": "text", "text": "the ratio?"}]},
                ],
                "filters": {"source": "/nowhere"},
            },
        )
    assert r.status_code == 200, r.text
    assert r.json()["sources"] == []  # the filter held: nothing matched, nothing invented
    assert "no information" in r.json()["choices"][0]["message"]["content"]


async def test_last_message_must_be_from_the_user(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as c:
        r = await c.post(
            "/chat/completions",
            json={"model": "rag:default", "messages": [{"role": "assistant", "content": "hi"}]},
        )
    assert r.status_code == 422
    assert r.json()["error"]["param"].startswith("messages")
