"""/v1/ask and /v1/ask/stream on the real app, retrieval and chain; a scripted generator port."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.services import Services
from pipelines import prompts
from tests.support.fakes import ScriptedGenerator
from tests.support.sse import parse_events


@pytest.fixture
def generator(services: Services) -> ScriptedGenerator:
    gen = ScriptedGenerator()
    services.set_generator(gen)
    return gen


async def test_stream_sends_sources_tokens_then_done(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    r = await client.post("/v1/ask/stream", json={"question": "How hot is Venus?", "k": 3})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-accel-buffering"] == "no"
    events = parse_events(r.text)
    names = [e.event for e in events]
    assert names == ["sources"] + ["token"] * 5 + ["done"]
    sid = events[0].id.split(".")[0]  # `<stream id>.<seq>`: a resume names where it was
    assert len(sid) == 16 and r.headers["x-stream-id"] == sid
    assert [e.id for e in events] == [f"{sid}.{i}" for i in range(1, len(events) + 1)]
    sources = events[0].data["sources"]
    assert [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    assert "464 degrees" in sources[0]["text"]
    assert {"doc_id", "chunk_id", "title", "source", "score", "text"} <= sources[0].keys()
    assert "".join(e.data["text"] for e in events[1:-1]) == "Venus is hot [1]."
    done = events[-1].data
    assert done["finish_reason"] == "stop"
    assert done["usage"] == {"prompt_tokens": 42, "completion_tokens": 5, "total_tokens": 47}
    assert set(done["latency_ms"]) >= {"retrieval", "ttft", "total"}
    # The prompt numbers the same sources the client got, and asks for citations.
    prompt = generator.requests[-1].messages
    assert prompt[0].role == "system" and "[1]" in prompt[0].content
    system = prompt[0].content.lower()
    assert "cite" in system or "in brackets" in system
    # The question is the last turn (with the sources, in the default prompt's form).
    assert prompt[-1].role == "user" and prompt[-1].content.endswith("How hot is Venus?")
    assert "464 degrees" in "\n".join(m.content for m in prompt)


async def test_ask_json_returns_the_same_answer(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    r = await client.post("/v1/ask", json={"question": "How hot is Venus?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "Venus is hot [1]."
    assert body["sources"][0]["n"] == 1
    assert body["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == 5


async def test_generator_down_before_first_token_is_503_retryable(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    generator.fail_before_first = True
    r = await client.post("/v1/ask/stream", json={"question": "How hot is Venus?"})
    assert r.status_code == 503
    assert r.headers["retry-after"]
    err = r.json()["error"]
    assert err["code"] == "generator_unavailable" and err["retryable"] is True


async def test_generator_failing_mid_stream_sends_one_error_event(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    generator.fail_after = 2
    r = await client.post("/v1/ask/stream", json={"question": "How hot is Venus?"})
    assert r.status_code == 200
    events = parse_events(r.text)
    assert [e.event for e in events] == ["sources", "token", "token", "error"]
    err = events[-1].data["error"]
    assert err["code"] == "generation_failed" and err["request_id"]


async def test_generator_failing_mid_answer_is_a_documented_502(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    """Without a stream to carry an error event, the JSON answer fails whole: 502, retryable,
    and /v1/ask's OpenAPI says so."""
    generator.fail_after = 2
    r = await client.post("/v1/ask", json={"question": "How hot is Venus?"})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "generation_failed" and err["retryable"] is True
    spec = (await client.get("/openapi.json")).json()
    assert "502" in spec["paths"]["/v1/ask"]["post"]["responses"]
    assert "502" in spec["paths"]["/v1/chat/completions"]["post"]["responses"]


async def test_unknown_collection_is_404_before_streaming(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    r = await client.post("/v1/ask/stream", json={"question": "x", "collection": "nope"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "collection_not_found"
    assert generator.requests == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"question": ""}, "question"),
        ({"question": "   "}, "question"),
        ({"question": "x" * 4001}, "question"),
        ({}, "body"),
        ({"question": "a", "messages": [{"role": "user", "content": "b"}]}, "body"),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            },
            "body",
        ),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"question": "x", "temperature": 5}, "temperature"),
        ({"question": "x", "max_tokens": 0}, "max_tokens"),
    ],
)
async def test_bad_ask_requests_are_422_naming_the_field(
    client: httpx.AsyncClient, generator: ScriptedGenerator, body: dict[str, Any], field: str
) -> None:
    r = await client.post("/v1/ask/stream", json=body)
    assert r.status_code == 422, r.text
    assert any(d["field"].startswith(field) for d in r.json()["error"]["details"])


async def test_empty_retrieval_says_the_knowledge_base_has_nothing(
    client: httpx.AsyncClient, generator: ScriptedGenerator, services: Services
) -> None:
    await services.store.ensure_collection("empty", create=True)
    r = await client.post("/v1/ask/stream", json={"question": "Who won?", "collection": "empty"})
    events = parse_events(r.text)
    assert events[0].data["sources"] == []
    text = "".join(e.data["text"] for e in events if e.event == "token")
    assert "knowledge base has no information" in text and "[" not in text
    assert events[-1].event == "done"
    assert generator.requests == []  # the model was not asked to answer from nothing


async def test_follow_up_is_rewritten_before_retrieval(
    client: httpx.AsyncClient, generator: ScriptedGenerator, services: Services
) -> None:
    generator.rewrite_to = "How high is Olympus Mons on Mars?"
    r = await client.post(
        "/v1/ask",
        json={
            "messages": [
                {"role": "user", "content": "Which planet has the tallest volcano?"},
                {"role": "assistant", "content": "Mars [1]."},
                {"role": "user", "content": "How high is it?"},
            ]
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "How high is Olympus Mons on Mars?"
    assert "22 kilometres" in body["sources"][0]["text"]
    final = generator.requests[-1].messages
    # system, the prompt's worked example turns, the history, the question
    examples = ["user", "assistant"] * (
        len(prompts.prompt_variant(services.settings.citations.prompt).examples) // 2
    )
    assert [m.role for m in final] == ["system", *examples, "user", "assistant", "user"]
    assert final[-3].content == "Which planet has the tallest volcano?"
    assert final[-1].content.endswith("How high is it?")


async def test_generator_still_starting_is_503_but_search_works(
    client: httpx.AsyncClient, services: Services
) -> None:
    services.generator_state = "starting"
    r = await client.post("/v1/ask", json={"question": "How hot is Venus?"})
    assert r.status_code == 503
    assert "starting" in r.json()["error"]["message"]
    assert (await client.post("/v1/search", json={"query": "Venus"})).status_code == 200
    ready = (await client.get("/readyz")).json()
    assert ready["status"] == "ready" and ready["details"]["generator"] == "starting"


async def test_openapi_documents_sse_events(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    op = spec["paths"]["/v1/ask/stream"]["post"]
    assert "text/event-stream" in op["responses"]["200"]["content"]
    for name in ("sources", "token", "done", "error"):
        assert f"`{name}`" in op["description"]
