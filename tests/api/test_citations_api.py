"""Citations on the wire: `[n]` naming no source never shows, each valid one comes back with
the cited sentence, the chunk id and the supporting span of its source (/v1/ask/stream's
`done`, /v1/ask, and the OpenAI route's extra fields)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.services import Services
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.sse import parse_events

# `[1]` cut into three tokens, and `[9]` where only a few sources were given.
TOKENS = ["Venus ", "is ", "hot ", "[", "1", "]", " and ", "[9]", "."]
SHOWN = "Venus is hot [1] and ."
QUESTION = {"question": "How hot is Venus?", "k": 3}


@pytest.fixture
def settings(make_settings: Any, request: pytest.FixtureRequest) -> Settings:
    """The default settings, or those a test names with `indirect` parametrization."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    settings: Settings = make_settings(**overrides)
    return settings


@pytest.fixture
def generator(services: Services) -> ScriptedGenerator:
    gen = ScriptedGenerator(tokens=list(TOKENS))
    services.set_generator(gen)
    return gen


def _span_text(text: str, span: dict[str, int] | None) -> str:
    assert span is not None
    assert 0 <= span["start"] < span["end"] <= len(text)
    return text[span["start"] : span["end"]]


def _check_citations(body: dict[str, Any], answer: str, sources: list[dict[str, Any]]) -> None:
    assert body["invalid_citations"] == 1
    [citation] = body["citations"]
    assert citation["n"] == 1 and citation["chunk_id"] == sources[0]["chunk_id"]
    assert _span_text(answer, citation["answer_span"]) == SHOWN
    assert _span_text(answer, citation["marker"]) == "[1]"
    assert "Venus" in _span_text(sources[0]["text"], citation["source_span"])
    assert isinstance(citation["support"], float) and isinstance(citation["supported"], bool)


async def test_stream_hides_the_invalid_marker_and_done_carries_the_citation(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    r = await client.post("/v1/ask/stream", json=QUESTION)
    assert r.status_code == 200
    events = parse_events(r.text)
    assert events[0].event == "sources" and events[-1].event == "done"
    sources = events[0].data["sources"]
    assert 1 <= len(sources) < 9
    tokens = [e.data["text"] for e in events if e.event == "token"]
    assert all("[9]" not in t and "9" not in t for t in tokens)
    answer = "".join(tokens)
    assert answer == SHOWN
    done = events[-1].data
    _check_citations(done, answer, sources)
    # Each source's best sentence for the question, in the sources' order.
    assert len(done["best_spans"]) == len(sources)
    assert "464 degrees" in _span_text(sources[0]["text"], done["best_spans"][0])


async def test_ask_json_carries_citations_and_best_spans(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    r = await client.post("/v1/ask", json=QUESTION)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == SHOWN
    _check_citations(body, body["answer"], body["sources"])
    first = body["sources"][0]
    assert "464 degrees" in _span_text(first["text"], first["best_span"])


async def test_openai_route_carries_citations_next_to_sources(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    request = {"model": "ragserve", "messages": [{"role": "user", "content": "How hot is Venus?"}]}
    r = await client.post("/v1/chat/completions", json={**request, "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    answer = body["choices"][0]["message"]["content"]
    assert answer == SHOWN
    _check_citations(body, answer, body["sources"])

    r = await client.post("/v1/chat/completions", json={**request, "k": 3, "stream": True})
    assert r.status_code == 200
    lines = [
        line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")
    ]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    answer = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert answer == SHOWN
    [final] = [c for c in chunks if "sources" in c]
    _check_citations(final, answer, final["sources"])


async def test_nothing_found_answer_has_no_citations(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    r = await client.post("/v1/ask", json={**QUESTION, "filters": {"source": "no-such-file"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sources"] == [] and generator.requests == []
    assert body["citations"] == [] and body["invalid_citations"] == 0


@pytest.mark.parametrize("settings", [{"citations": {"enabled": False}}], indirect=True)
async def test_citations_off_leaves_the_text_as_generated(
    client: httpx.AsyncClient, generator: ScriptedGenerator
) -> None:
    r = await client.post("/v1/ask/stream", json=QUESTION)
    events = parse_events(r.text)
    tokens = [e.data["text"] for e in events if e.event == "token"]
    assert tokens == TOKENS
    done = events[-1].data
    assert done["citations"] == [] and done["invalid_citations"] == 0
    assert done["best_spans"] == [None] * len(events[0].data["sources"])
