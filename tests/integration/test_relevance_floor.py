"""The relevance floor on the samples (the real app, embedder, BM25 encoder and Edge store):
a question the knowledge base has nothing on gets no sources and the nothing-found answer
without calling the model; an on-topic one keeps its source, with a calibrated score."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.main import create_app
from app.services import Services
from pipelines import prompts
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import in_process_client

pytestmark = pytest.mark.slow  # the real embedder and store, the samples ingested per test

MODES = ["dense", "sparse", "hybrid"]
# Nothing in samples/ (coffee brewing, the ragserve guide, the solar system) answers these.
OFF_TOPIC = ["What is the capital of Peru?", "How do I reset a Cisco router?"]
ON_TOPIC = [
    ("How hot is the surface of Venus?", "solar-system.html", "464 degrees"),
    ("What grind size suits a French press?", "coffee-brewing.txt", "coarse"),
    ("How do I point ragserve at a Qdrant server?", "ragserve-guide.md", "RAG_QDRANT__URL"),
]


@pytest.fixture
def generator(services: Services) -> ScriptedGenerator:
    gen = ScriptedGenerator()
    services.set_generator(gen)
    return gen


@pytest.fixture
async def client(settings: Settings, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_client(create_app(settings, services=services)) as c:
        yield c


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("question", OFF_TOPIC)
async def test_off_topic_question_gets_no_sources_and_the_nothing_found_answer(
    client: httpx.AsyncClient, generator: ScriptedGenerator, question: str, mode: str
) -> None:
    r = await client.post("/v1/ask", json={"question": question, "mode": mode})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sources"] == []
    assert body["answer"] == prompts.NO_CONTEXT_ANSWER
    assert generator.requests == []  # the model never saw the question
    search = await client.post("/v1/search", json={"query": question, "mode": mode})
    assert search.status_code == 200, search.text
    assert search.json()["hits"] == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("question", "source", "passage"), ON_TOPIC)
async def test_on_topic_question_keeps_its_source_with_a_calibrated_score(
    client: httpx.AsyncClient,
    generator: ScriptedGenerator,
    settings: Settings,
    question: str,
    source: str,
    passage: str,
    mode: str,
) -> None:
    r = await client.post("/v1/ask", json={"question": question, "mode": mode})
    assert r.status_code == 200, r.text
    sources = r.json()["sources"]
    assert sources and sources[0]["source"].endswith(source)
    assert passage in sources[0]["text"]
    floor = settings.retrieval.relevance_floor
    assert all(floor <= s["score"] <= 1 and s["score"] > 0 for s in sources)
    assert len(generator.requests) == 1
    hits = (await client.post("/v1/search", json={"query": question, "mode": mode})).json()["hits"]
    assert hits[0]["source"].endswith(source) and 0 < hits[0]["score"] <= 1
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


async def test_search_min_score_zero_turns_the_floor_off(client: httpx.AsyncClient) -> None:
    question = OFF_TOPIC[0]
    r = await client.post("/v1/search", json={"query": question, "k": 3, "min_score": 0})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 3  # the samples' best 3 chunks, however unrelated
    assert all(0 <= h["score"] < 0.5 for h in hits)


async def test_search_min_score_above_the_floor_keeps_only_stronger_hits(
    client: httpx.AsyncClient,
) -> None:
    question = ON_TOPIC[0][0]
    every = (await client.post("/v1/search", json={"query": question, "min_score": 0})).json()
    best = every["hits"][0]["score"]
    r = await client.post("/v1/search", json={"query": question, "min_score": best})
    assert [h["chunk_id"] for h in r.json()["hits"]] == [every["hits"][0]["chunk_id"]]


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.2"])
async def test_search_min_score_outside_0_1_is_refused(
    client: httpx.AsyncClient, bad: object
) -> None:
    r = await client.post("/v1/search", json={"query": "Venus", "min_score": bad})
    assert r.status_code == 422, r.text
