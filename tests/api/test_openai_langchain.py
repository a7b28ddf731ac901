"""`sources` reach LangChain users (issue 18): `langchain_openai.ChatOpenAI` drops unknown
top-level response fields, but keeps a choice's `logprobs` object whole as
`response_metadata["logprobs"]`, after `invoke` as after `stream`. Driven through a real
`ChatOpenAI` against a live server on loopback (the sample documents, a scripted generator)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import reduce
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI

from pipelines.embedder import SentenceTransformerEmbedder
from pipelines.settings import Settings
from tests.support.fakes import ScriptedGenerator
from tests.support.servers import ThreadedLiveServer

QUESTION = "How hot is the surface of Venus?"


@pytest.fixture(scope="module")
def scripted() -> ScriptedGenerator:
    return ScriptedGenerator()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    scripted: ScriptedGenerator,
) -> Iterator[ThreadedLiveServer]:
    data = tmp_path_factory.mktemp("langchain") / "data"
    live = ThreadedLiveServer(Settings(_env_file=None, data_dir=data), embedder, scripted)  # type: ignore[call-arg]
    live.start()
    yield live
    live.stop()


@pytest.fixture
def llm(server: ThreadedLiveServer, scripted: ScriptedGenerator) -> ChatOpenAI:
    scripted.reset()
    return ChatOpenAI(
        base_url=f"{server.url}/v1", api_key="unused", model="rag:default", max_retries=0
    )


def sources_of(message: AIMessage | AIMessageChunk) -> list[dict[str, Any]]:
    """Where the README tells LangChain users to read them."""
    sources: list[dict[str, Any]] = message.response_metadata["logprobs"]["sources"]
    return sources


def raw_completion(server: ThreadedLiveServer) -> dict[str, Any]:
    body = {"model": "rag:default", "messages": [{"role": "user", "content": QUESTION}]}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_invoke_keeps_the_sources_in_response_metadata(
    llm: ChatOpenAI, server: ThreadedLiveServer
) -> None:
    message = llm.invoke(QUESTION)
    assert message.content == "Venus is hot [1]."
    sources = sources_of(message)
    assert sources and sources[0]["n"] == 1
    assert any("464 degrees" in s["text"] for s in sources)
    # The same sources as at the top level, where our own clients read them.
    assert sources == raw_completion(server)["sources"]


def test_stream_keeps_the_sources_in_the_aggregated_message(llm: ChatOpenAI) -> None:
    chunks = list(llm.stream(QUESTION))
    message = reduce(lambda a, b: a + b, chunks)
    assert isinstance(message, AIMessageChunk)
    assert message.content == "Venus is hot [1]."
    assert message.response_metadata["finish_reason"] == "stop"
    sources = sources_of(message)
    assert sources and any("464 degrees" in s["text"] for s in sources)
    # On one chunk only: the one with the finish reason.
    assert sum("logprobs" in c.response_metadata for c in chunks) == 1


async def test_ainvoke_and_astream_keep_them_too(llm: ChatOpenAI) -> None:
    message = await llm.ainvoke(QUESTION)
    chunks = [c async for c in llm.astream(QUESTION)]
    streamed = reduce(lambda a, b: a + b, chunks)
    assert sources_of(message) and sources_of(message) == sources_of(streamed)


def test_top_level_sources_stay_for_our_clients(server: ThreadedLiveServer) -> None:
    data = raw_completion(server)
    choice = data["choices"][0]
    assert data["sources"] and choice["logprobs"]["sources"] == data["sources"]
    # OpenAI's own logprobs fields: null (log probabilities are not returned).
    assert choice["logprobs"]["content"] is None and choice["logprobs"]["refusal"] is None
